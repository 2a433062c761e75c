"""Each survivor at its own sieve alignment: the vectorised streams, skip choice and features against the
plain per-survivor reference loop (tests/reference.py), and planted survivors found where Step 1 found them."""

from __future__ import annotations

import numpy as np
import pytest

from tests import reference
from worker.align import choose_skips, stream
from worker.params import SCORER_SPACE, random_params
from worker.prng import GENERATORS
from worker.scorer import features, features_at, quality
from worker.survivors import Survivors

MOD = 1000


def pool(rng: np.random.Generator, n: int, families: tuple[str, ...] = ("java_lcg", "minstd")) -> Survivors:
    """Survivors with random families, directions, offsets, skip ranges and windows."""
    skip_min = rng.integers(0, 4, n)
    return Survivors(seeds=rng.integers(0, 2**63, n).astype(np.uint64), family=rng.integers(0, len(families), n)
                     .astype(np.uint8), families=families, reverse=rng.random(n) < 0.5,
                     offset=rng.integers(0, 300, n), skip_min=skip_min, skip_max=skip_min + rng.integers(0, 3, n),
                     hybrid=np.zeros(n, dtype=bool), window=rng.integers(20, 300, n))


def reference_stream(survivors: Survivors, i: int, skip: int, first: int, count: int) -> tuple[list, list]:
    return reference.aligned_stream(survivors.families[survivors.family[i]], int(survivors.seeds[i]),
                                    int(survivors.offset[i]), skip, bool(survivors.reverse[i]),
                                    int(survivors.window[i]), first, count, MOD)


@pytest.mark.parametrize("first", [0, 250])
def test_streams_match_the_reference_loop(first: int):
    survivors = pool(np.random.default_rng(first), 24)
    skips = survivors.skip_max.copy()
    values, valid = stream(survivors, skips, first, 40, MOD)
    for i in range(len(survivors)):
        want_values, want_valid = reference_stream(survivors, i, int(skips[i]), first, 40)
        assert values[i].tolist() == want_values
        assert (np.ones(40, bool) if valid is None else valid[i]).tolist() == want_valid
    if first == 0:
        assert valid is not None and not valid.all()  # some forward survivors start after draw 0


def test_offset_zero_skip_zero_is_the_plain_stream():
    seeds = np.random.default_rng(1).integers(0, 2**63, 30).astype(np.uint64)
    values, valid = stream(Survivors.unaligned(seeds).of_family("java_lcg", "<test>"), np.zeros(30, int), 0, 500,
                           MOD)
    assert valid is None and np.array_equal(values, GENERATORS["java_lcg"].draws(seeds, 1, 500, MOD))


def test_skip_choice_matches_the_reference_loop():
    rng = np.random.default_rng(7)
    survivors = pool(rng, 16, ("java_lcg",))
    draws = reference_stream(survivors, 3, int(survivors.skip_max[3]), 0, 600)[0]  # survivor 3 made the draws
    chosen = choose_skips(survivors, np.array(draws), 0, MOD)
    want = [reference.best_skip("java_lcg", int(survivors.seeds[i]), int(survivors.offset[i]),
                                int(survivors.skip_min[i]), int(survivors.skip_max[i]), bool(survivors.reverse[i]),
                                int(survivors.window[i]), draws, MOD) for i in range(len(survivors))]
    assert chosen.tolist() == want and chosen[3] == survivors.skip_max[3]


@pytest.mark.parametrize("reverse", [False, True])
def test_a_survivor_planted_at_skip_5_is_found_where_the_sieve_found_it(reverse: bool):
    """It made every draw: under its own alignment it matches all of them, train and holdout (with the
    skip chosen on the fit window alone); under draw j <-> step j + 1 it matches at chance."""
    n_train, n_holdout, n_old = 2000, 500, 1500
    planted = Survivors(seeds=np.array([123456789], dtype=np.uint64), family=np.zeros(1, np.uint8),
                        families=("java_lcg",), reverse=np.array([reverse]), offset=np.array([40]),
                        skip_min=np.array([0]), skip_max=np.array([8]), hybrid=np.zeros(1, bool),
                        window=np.array([100]))
    made = stream(planted, np.array([5]), 0, n_train + n_holdout, MOD)[0][0]
    train, holdout = made[:n_train], made[n_train:]
    skip = choose_skips(planted, train[:n_old], 0, MOD)
    assert skip.tolist() == [5]
    values, valid = stream(planted, skip, 0, n_train + n_holdout, MOD)
    evidence = slice(None) if valid is None else valid[0]
    assert (values[0][evidence] == made[evidence]).all()
    assert quality(values[:, n_train:], None if valid is None else valid[:, n_train:], holdout, MOD)[0] == 1.0
    plain = GENERATORS["java_lcg"].draws(planted.seeds, n_train + 1, n_holdout, MOD)
    assert quality(plain, None, holdout, MOD)[0] < 0.01


def test_masked_features_and_quality_match_the_reference_loop():
    rng = np.random.default_rng(3)
    survivors = pool(rng, 12)
    draws = rng.integers(0, MOD, 400)
    draws[::3] = reference_stream(survivors, 0, int(survivors.skip_min[0]), 0, 400)[0][::3]  # some agreement
    skips = survivors.skip_min.copy()
    for params in (random_params(rng), {**random_params(rng), "max_offset": 0}):
        values, valid = stream(survivors, skips, 0, len(draws) + params["max_offset"], MOD)
        fast = features(values, valid, draws, params, MOD)
        slow = [reference.features(*reference_stream(survivors, i, int(skips[i]), 0, len(draws) + params["max_offset"]),
                                   draws.tolist(), params, MOD) for i in range(len(survivors))]
        assert np.allclose(fast, slow, rtol=1e-5, atol=1e-6)
        q = quality(values, valid, draws, MOD)
        assert np.allclose(q, [reference.quality(*reference_stream(survivors, i, int(skips[i]), 0, len(draws)),
                                                 draws.tolist(), MOD) for i in range(len(survivors))])
    assert set(SCORER_SPACE) <= set(params)


def test_a_survivor_with_no_evidence_in_a_window_reads_as_chance():
    """A forward survivor found late (offset 3000, skip 2) has no step >= 1 among the first draws."""
    late = Survivors(seeds=np.array([99], dtype=np.uint64), family=np.zeros(1, np.uint8), families=("java_lcg",),
                     reverse=np.zeros(1, bool), offset=np.array([3000]), skip_min=np.array([2]),
                     skip_max=np.array([2]), hybrid=np.zeros(1, bool), window=np.array([100]))
    values, valid = stream(late, np.array([2]), 0, 500, MOD)
    assert valid is not None and not valid.any()
    assert quality(values, valid, np.zeros(500, int), MOD)[0] == pytest.approx(1 / MOD)
    params = {**random_params(np.random.default_rng(0)), "max_offset": 0}
    x = features(values, valid, np.zeros(500, int), params, MOD)
    assert np.allclose(x[0, :7], 0.0)  # every effect is 0: no evidence either way


def test_nested_windows_in_one_pass_equal_each_window_alone():
    rng = np.random.default_rng(6)
    survivors = pool(rng, 20)
    draws = rng.integers(0, MOD, 600)
    params = random_params(rng)
    values, valid = stream(survivors, survivors.skip_min, 0, 600 + params["max_offset"], MOD)
    short, long = features_at(values, valid, draws, params, MOD, (350, 600))
    assert np.allclose(short, features(values, valid, draws[:350], params, MOD))
    assert np.allclose(long, features(values, valid, draws, params, MOD))
