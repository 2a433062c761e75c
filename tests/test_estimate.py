"""A trial's value as an estimate: replicates, standard error, the permutation null and its p-values,
and the top of each replicate's ranking."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from scipy.stats import kstest, spearmanr

from worker.bench import make_job
from worker.contract import Evaluation
from worker.demo import write_uniform
from worker.estimate import estimate
from worker.objective import SPEARMAN, TOP
from worker.params import random_params
from worker.trial import run_trial

PARAMS = random_params(np.random.default_rng(4))


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    out = tmp_path_factory.mktemp("uniform")
    write_uniform(out, n_survivors=3000, n_train=1500, n_holdout=500, seed=8)
    return out


def test_the_vectorised_null_is_spearmans_rho_of_permuted_truths():
    rng = np.random.default_rng(0)
    pred, truth = rng.random(200), rng.poisson(1, 200).astype(float)  # ties, as holdout counts have
    perms = np.random.default_rng(1).permuted(np.broadcast_to(truth, (5, 200)), axis=1)
    fast = SPEARMAN._values(pred, perms)
    assert np.allclose(fast, [spearmanr(pred, p)[0] for p in perms], atol=1e-12)
    assert SPEARMAN.value(pred, truth)[0] == pytest.approx(spearmanr(pred, truth)[0])


def test_the_top_lift_reads_the_top_share_only():
    truth = np.zeros(1000)
    truth[:10] = 0.01  # the ten best survivors
    assert TOP.value(-np.arange(1000.0), truth)[0] == pytest.approx(99.0)  # all ten on top: 100x the mean
    assert TOP.value(np.arange(1000.0), truth)[0] == pytest.approx(-1.0)  # none of them
    assert TOP.value(np.ones(1000), truth) == (-1.0, "predictions are constant")


def test_estimate_of_replicates_has_a_standard_error_and_a_chance_level():
    rng = np.random.default_rng(2)
    truths = [rng.random(300) for _ in range(4)]
    preds = [t + rng.normal(0, 2, 300) for t in truths]  # a weak signal
    fig = estimate(SPEARMAN, preds, truths, np.random.default_rng(3), 400)
    assert fig.value == pytest.approx(np.mean([spearmanr(p, t)[0] for p, t in zip(preds, truths, strict=True)]))
    assert fig.se == pytest.approx(np.std(fig.replicates, ddof=1) / 2)
    assert abs(fig.null_mean) < 0.01 and fig.null_sd == pytest.approx(1 / np.sqrt(299 * 4), rel=0.15)
    assert fig.p_value == (1 + sum(v >= fig.value for v in fig.null)) / 401
    assert fig.p_normal < 0.01 < estimate(SPEARMAN, preds[:1], [truths[1]], rng, 400).p_normal  # mismatched: chance
    assert len(fig.null) == 400 and estimate(SPEARMAN, preds, truths, rng, 0).p_value is None


def test_on_signal_free_data_trial_p_values_are_uniform(uniform, caplog):
    """No signal: each trial's permutation p-value is what chance gives, so they spread evenly over (0, 1)."""
    caplog.set_level(logging.ERROR)
    evaluation = Evaluation(replicates=2, eval_size=300, nulls=200, objective="spearman_rho")
    p = [run_trial(make_job(uniform, random_params(np.random.default_rng(n)), trial_number=n, sample_size=150,
                            evaluation=evaluation), uniform).diagnostics["figures"]["spearman_rho"]["p_normal"]
         for n in range(16)]
    assert kstest(p, "uniform").pvalue > 0.01


def test_replicates_are_disjoint_and_the_top_of_each_ranking_is_recorded(uniform):
    job = make_job(uniform, PARAMS, trial_number=5, sample_size=100,
                   evaluation=Evaluation(replicates=3, eval_size=250, nulls=50, objective="top_lift"))
    outcome = run_trial(job, uniform)
    again = run_trial(job, uniform)
    assert again.accuracy == outcome.accuracy and again.diagnostics == outcome.diagnostics  # a retry reproduces it
    d = outcome.diagnostics
    assert len(outcome.sample_indices) == len(set(outcome.sample_indices)) == 750
    assert [len(r) for r in d["ranked"]] == [250] * 3 and set(sum(d["ranked"], [])) == set(outcome.sample_indices)
    seeds = np.load(uniform / "survivors.npz")["seeds"]
    for top, ranked in zip(d["top"], d["ranked"], strict=True):
        assert [t["index"] for t in top] == ranked[:10]
        assert all(t["seed"] == int(seeds[t["index"]]) for t in top)
        assert [t["predicted"] for t in top] == sorted((t["predicted"] for t in top), reverse=True)
    assert outcome.accuracy == d["figures"]["top_lift"]["value"] and d["objective"] == "top_lift"
    assert len(d["fits"]) == 3 and d["figures"]["spearman_rho"]["se"] is not None
    json.dumps(d, allow_nan=False)


def test_an_evaluation_larger_than_the_pool_is_refused(uniform):
    job = make_job(uniform, PARAMS, sample_size=100, evaluation=Evaluation(4, 1000, 0, "spearman_rho"))
    with pytest.raises(ValueError, match="the evaluation needs 4,000 survivors \\(4 replicates x eval_size 1000\\),"
                                         " the pool has 3,000"):
        run_trial(job, uniform)
