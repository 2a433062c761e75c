"""The exact, faster TPE: active on the installed Optuna, the same suggestions as TPESampler, and the
plain sampler where the Optuna code it relies on differs."""

from __future__ import annotations

import inspect

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers._tpe import _truncnorm
from optuna.samplers._tpe import sampler as tpe_sampler
from optuna.trial import TrialState

from coordinator import fast_tpe
from coordinator.study import distributions, make_sampler
from worker.params import random_params

SETTINGS = {"seed": 3, "constant_liar": True, "multivariate": True, "n_startup_trials": 10}


def test_the_fast_path_is_active_on_the_installed_optuna():
    """An Optuna upgrade that changes the code the fast path relies on fails here, loudly; the coordinator
    itself would fall back to the plain sampler."""
    assert fast_tpe.fingerprint() == fast_tpe.CHECKED_FINGERPRINT and fast_tpe.ACTIVE
    assert type(make_sampler(0)) is fast_tpe.FastTPESampler


def suggestions(sampler: optuna.samplers.BaseSampler, existing: int, asks: int) -> list[list[str]]:
    """Every suggested value's repr, with 25 trials in flight, results told oldest first, every 7th a FAIL."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists, rng = distributions(), np.random.default_rng(0)
    study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=dists,
                                                value=float(rng.uniform(-0.2, 0.5))) for _ in range(existing)])
    out, running = [], []
    for i in range(asks):
        trial = study.ask(dists)
        out.append([repr(trial.params[name]) for name in dists])
        running.append(trial)
        if len(running) > 25:
            oldest = running.pop(0)
            if i % 7 == 0:
                study.tell(oldest, state=TrialState.FAIL)
            else:
                study.tell(oldest, float(rng.uniform(-0.2, 0.5)))
    return out


@pytest.mark.parametrize(("existing", "asks"), [(0, 90), (300, 30)])
def test_suggestions_are_bit_identical_to_plain_tpe(existing: int, asks: int, monkeypatch: pytest.MonkeyPatch):
    """The plain sampler with Optuna's own module functions, which a FastTPESampler replaces for the process."""
    monkeypatch.setattr(tpe_sampler, "_get_infeasible_trial_score", fast_tpe._infeasible_score)
    monkeypatch.setattr(tpe_sampler, "_split_trials", fast_tpe._optuna_split_trials)
    monkeypatch.setattr(_truncnorm, "_log_ndtr", fast_tpe._optuna_log_ndtr)
    plain = suggestions(optuna.samplers.TPESampler(**SETTINGS), existing, asks)
    fast = fast_tpe.FastTPESampler(**SETTINGS)
    assert suggestions(fast, existing, asks) == plain
    assert fast._grids and fast._rows is not None and fast._rows._used  # the caches served, not Optuna's fallbacks


def test_the_folded_search_space_is_optunas():
    """At every ask, with trials in flight finishing out of order, pruned, failed and waiting ones, and a
    parameter whose range changes (it leaves the intersection) and one that only some trials have."""
    study = optuna.create_study(direction="maximize")
    ours, optunas = fast_tpe._FoldedIntersection(), optuna.search_space.IntersectionSearchSpace(include_pruned=True)
    rng, running = np.random.default_rng(2), []
    for i in range(120):
        if i % 13 == 5:
            study.enqueue_trial({"x": 0.5})  # a WAITING trial until the next ask takes it
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 1, 9 if i < 60 else 10)
        if i % 4:
            trial.suggest_categorical("c", ["a", "b"])
        running.append(trial)
        if len(running) > 5:
            done = running.pop(int(rng.integers(len(running))))
            state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][int(rng.integers(3))]
            study.tell(done, float(rng.uniform()) if state == TrialState.COMPLETE else None, state=state)
        expected = optunas.calculate(study, use_cache=True)
        got = ours.calculate(study, use_cache=True)
        assert list(got.items()) == list(expected.items())
    assert list(got) == ["x"]


def test_the_log_normal_cdf_is_optunas_bit_for_bit():
    """Both branches of Optuna's and the series below -20, their boundaries to the last bit, zeros of both
    signs, infinities and NaN."""
    rng = np.random.default_rng(4)
    edges = [np.nextafter(edge, direction, dtype=float) if step else edge for edge in (6.0, -20.0, 1.0, -1.0, 0.0)
             for direction in (np.inf, -np.inf) for step in (0, 1)]
    a = np.concatenate([edges, [-0.0, np.inf, -np.inf, np.nan, -38.5, 1e-300], rng.normal(0, 10, 20000),
                        np.linspace(-45, 45, 90000), -np.geomspace(20, 1e150, 4998)])
    ours, theirs = fast_tpe._log_ndtr(a.reshape(-1, 7)), fast_tpe._optuna_log_ndtr(a).reshape(-1, 7)
    assert ours.shape == theirs.shape and np.array_equal(ours.view(np.int64), theirs.view(np.int64))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_split_is_optunas(direction: str):
    """Ties (kept in their order), trials out of number order, running ones, and Optuna's own split where
    it differs: a pruned trial, a constraint, two objectives, a NaN value."""
    rng = np.random.default_rng(5)
    dists = distributions()
    study = optuna.create_study(direction=direction)
    study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=dists,
                                                value=float(rng.integers(0, 9))) for _ in range(60)])
    for _ in range(8):
        study.ask(dists)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    shuffled = [trials[i] for i in rng.permutation(len(trials))]
    pruned = optuna.trial.create_trial(params=random_params(rng), distributions=dists, state=TrialState.PRUNED)
    constrained = optuna.trial.create_trial(params=random_params(rng), distributions=dists, value=1.0,
                                            system_attrs={"constraints": [0.5]})
    unvalued = optuna.trial.create_trial(params=random_params(rng), distributions=dists, value=1.0)
    unvalued._values = [float("nan")]
    pair = optuna.create_study(directions=[direction, direction])
    pair.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=dists,
                                               values=[float(v) for v in rng.integers(0, 9, 2)]) for _ in range(30)])
    cases = [(study, sample) for sample in (trials, shuffled, trials + [pruned], trials + [constrained],
                                            trials + [unvalued])]
    for target, sample in [*cases, (pair, pair.get_trials(deepcopy=False))]:
        for n_below in (0, 1, 6, 25, 200):
            expected = fast_tpe._optuna_split_trials(target, sample, n_below)
            assert [list(map(id, side)) for side in fast_tpe._split_trials(target, sample, n_below)] == [
                list(map(id, side)) for side in expected]


def test_an_optuna_whose_code_differs_gets_the_plain_sampler(monkeypatch: pytest.MonkeyPatch):
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("#" if obj is fast_tpe._truncnorm else ""))
    assert fast_tpe.fingerprint() != fast_tpe.CHECKED_FINGERPRINT
    monkeypatch.setattr(fast_tpe, "ACTIVE", False)
    assert type(make_sampler(0)) is optuna.samplers.TPESampler


def test_the_mass_cache_gives_optunas_values(monkeypatch: pytest.MonkeyPatch):
    """Each (a, b) as `_truncnorm._log_gauss_mass` computes it, whether first seen, recent, merged into
    the large tier or after a restart, or taken from the start of one of the latest calls (two of
    them, of different sizes, each the one before with its tail changed); NaN and both zeros included."""
    monkeypatch.setattr(fast_tpe._MassCache, "RECENT", 64)
    monkeypatch.setattr(fast_tpe._MassCache, "LIMIT", 300)
    rng = np.random.default_rng(1)
    cache = fast_tpe._MassCache()
    latest = {size: np.round(np.cumsum([rng.normal(0, 8, size), rng.uniform(0, 5, size)], axis=0), 1)
              for size in (150, 120)}
    for i in range(24):  # a == b gives log(0): a warning, as in Optuna
        size = (150, 120)[i % 2]
        a, b = latest[size]
        keep = int(rng.integers(size))
        a, b = np.concatenate([a[:keep], np.round(rng.normal(0, 8, size - keep), 1)]), b.copy()
        b[keep:] = a[keep:] + np.round(rng.uniform(0, 5, size - keep), 1)
        if i % 3 == 0:
            at = int(rng.integers(size - 3))
            a[at:at + 3], b[at:at + 3] = [np.nan, -0.0, 0.0], [1.0, 0.5, 0.5]
        latest[size] = np.stack([a, b])
        np.testing.assert_array_equal(cache(a.reshape(-1, 15), b.reshape(-1, 15)),
                                      _truncnorm._log_gauss_mass(a, b).reshape(-1, 15))


@pytest.mark.parametrize("dist", [IntDistribution(0, 20), IntDistribution(0, 20, step=2),
                                  IntDistribution(1, 64, log=True), FloatDistribution(0.0, 1.0, step=0.1),
                                  FloatDistribution(1e-4, 1.0, log=True)])
def test_the_estimators_log_density_is_optunas(dist: optuna.distributions.BaseDistribution):
    """On the grid the caches apply to and off it (a log or fractional step, a sample outside the bounds)."""
    rng = np.random.default_rng(2)
    space = {"c": CategoricalDistribution(("a", "b", "c")), "x": dist, "y": IntDistribution(3, 9),
             "f": FloatDistribution(-1.0, 1.0), "g": FloatDistribution(0.0, 5.0)}
    sampler = fast_tpe.FastTPESampler(**SETTINGS)
    observed = {"c": rng.integers(0, 3, 40).astype(float), "x": _values(dist, rng, 40),
                "y": _values(space["y"], rng, 40), "f": rng.uniform(-1, 1, 40), "g": rng.uniform(0, 5, 40)}
    estimator = sampler._estimator(observed, space, sampler._parzen_estimator_parameters)
    samples = estimator.sample(np.random.RandomState(0), 24)
    samples["f"][0] = 1.5  # outside: Optuna gives -inf for that kernel mixture's term
    for batch in (samples, {k: v[1:] for k, v in samples.items()}):
        expected = estimator._mixture_distribution.log_pdf(estimator._transform(batch))
        np.testing.assert_array_equal(estimator.log_pdf(batch), expected)


def _values(dist: IntDistribution | FloatDistribution, rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` observations of the parameter, in its internal representation."""
    if dist.log:
        values = np.exp(rng.uniform(np.log(dist.low), np.log(dist.high), n))
        return np.round(values) if isinstance(dist, IntDistribution) else values
    return dist.low + dist.step * rng.integers(0, round((dist.high - dist.low) / dist.step) + 1, n)


def test_masses_computed_together_are_the_ones_computed_apart():
    """Table entries filled in shared calls get the values a call per lookup gives, also where Optuna's
    erf switches to its polynomial (a call with ERF_EXACT_BELOW central values or more): packed naively
    into one call, these would not."""
    rng = np.random.default_rng(5)
    sizes = [2500, 1200, 1200, 300, 0, 40]  # central values of each lookup

    def lookup(central: int) -> fast_tpe._Entries:
        a = np.concatenate([-rng.uniform(0, 3, central), rng.uniform(0.1, 3, 50)])
        b = np.concatenate([rng.uniform(0.1, 3, central), a[central:] + rng.uniform(0.1, 2, 50)])
        table = np.full((1, a.size), np.nan)
        return fast_tpe._Entries(table, np.ones(1), np.arange(a.size), lambda cols: a[cols], lambda cols: b[cols])

    entries = [lookup(central) for central in sizes]
    apart = [_truncnorm._log_gauss_mass(e.a, e.b) for e in entries]
    a, b = (np.concatenate([getattr(e, end) for e in entries]) for end in "ab")
    together = _truncnorm._log_gauss_mass(a, b)
    assert not np.array_equal(together, np.concatenate(apart))
    fast_tpe._compute(entries)
    for entry, expected in zip(entries, apart, strict=True):
        assert np.array_equal(entry.values().view(np.int64), expected.view(np.int64))
