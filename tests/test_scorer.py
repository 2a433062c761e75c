import json

import numpy as np
import pytest

from worker.align import choose_skips, stream
from worker.demo import write_uniform
from worker.params import SCORER_SPACE
from worker.prng import GENERATORS
from worker.scorer import FEATURES, chance, features, quality
from worker.survivors import read_survivors

JAVA = GENERATORS["java_lcg"]
BASE = {"residue_mod_1": 10, "residue_mod_2": 100, "residue_mod_3": 1000, "max_offset": 5,
        "temporal_window_size": 100, "temporal_num_windows": 5, "min_confidence_threshold": 0.005}
# One change per scorer parameter, each within the search space.
CHANGES = {"residue_mod_1": 7, "residue_mod_2": 73, "residue_mod_3": 500, "max_offset": 15,
           "temporal_window_size": 60, "temporal_num_windows": 9, "min_confidence_threshold": 0.02}


class SurvivorScorer:
    """The scorer on unaligned java_lcg seeds: draw t of the window at stream position start + t."""

    @staticmethod
    def features(seeds, draws, start, params, mod, generator):
        return features(generator.draws(seeds, start, len(draws) + params["max_offset"], mod), None, draws,
                        params, mod)

    @staticmethod
    def quality(seeds, draws, start, mod, generator):
        return quality(generator.draws(seeds, start, len(draws), mod), None, draws, mod)


def aligned(folder):
    """A Step 1 folder's survivors at their own alignment, skips chosen on the older train draws: the
    streams (with 15 draws beyond the train draws), which draws carry evidence, and the draws."""
    survivors = read_survivors(folder / "bidirectional_survivors_binary.npz").of_family("java_lcg", "<test>")
    train = np.array(json.loads((folder / "train_history.json").read_text()))
    holdout = np.array(json.loads((folder / "holdout_history.json").read_text()))
    skips = choose_skips(survivors, train[:len(train) - len(holdout)], 0, 1000)
    return (*stream(survivors, skips, 0, len(train) + 15, 1000), train, holdout)


@pytest.fixture(scope="module")
def planted(small_demo):
    return aligned(small_demo)


def test_the_generating_seed_has_quality_one_on_train_and_holdout():
    seeds = np.array([987654321, 5, 2**40 + 3], dtype=np.uint64)
    stream = JAVA.draws(seeds[:1], 1, 5000, 1000)[0]
    train, holdout = stream[:4000], stream[4000:]
    on_train = SurvivorScorer.quality(seeds, train, 1, 1000, JAVA)
    on_holdout = SurvivorScorer.quality(seeds, holdout, 4001, 1000, JAVA)
    assert on_train[0] == on_holdout[0] == 1.0
    assert on_train[1:].max() < 0.01 and on_holdout[1:].max() < 0.01
    # The old worker restarted the holdout at position 1: the true seed then scored at chance.
    assert SurvivorScorer.quality(seeds[:1], holdout, 1, 1000, JAVA)[0] < 0.01


def test_features_shape_and_dtype(planted):
    values, valid, train, _ = planted
    x = features(values, valid, train, BASE, 1000)
    assert x.shape == (len(values), len(FEATURES)) and x.dtype == np.float32
    assert np.isfinite(x).all()


def test_the_search_space_and_the_sensitivity_test_cover_the_same_parameters():
    assert set(CHANGES) == set(BASE) == set(SCORER_SPACE)
    assert all(SCORER_SPACE[k].check(v) for k, v in {**BASE, **CHANGES}.items())


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_scorer_parameter_alone_changes_the_features(planted, name):
    values, valid, train, _ = planted
    before = features(values, valid, train, BASE, 1000)
    after = features(values, valid, train, {**BASE, name: CHANGES[name]}, 1000)
    assert not np.allclose(before, after)


def test_features_do_not_grow_with_the_window(tmp_path):
    """Rates, not counts: on signal-free data every feature sits at its chance level whatever the
    window's length (the old 'number of predictions' was 4x larger on 4,000 draws than on 1,000)."""
    write_uniform(tmp_path, n_survivors=300, n_train=4000, n_holdout=100, seed=1)
    seeds = np.load(tmp_path / "survivors.npz")["seeds"]
    train = np.array(json.loads((tmp_path / "train_history.json").read_text()))
    short = SurvivorScorer.features(seeds, train[:1000], 1, BASE, 1000, JAVA).mean(axis=0)
    long = SurvivorScorer.features(seeds, train, 1, BASE, 1000, JAVA).mean(axis=0)
    assert np.abs(short - long).max() < 0.05
    assert np.abs(long).max() < 0.1


def test_the_generators_relatives_stand_out_mod_8_and_nothing_does_in_the_null_variant(planted, small_null):
    """Seeds that share a generator's low 19 state bits agree with its draws mod 8 forever: a residue
    mod 8 sees them; on the null variant (the same survivors, uniform draws) nothing stands out."""
    mod8 = {**BASE, "residue_mod_1": 8}
    residue = FEATURES.index("residue_1")
    values, valid, train, _ = planted
    z = features(values, valid, train, mod8, 1000)[:, residue] * np.sqrt(len(train))
    assert (z > 5).mean() > 0.2  # the relatives are a large share of the demo's pool
    values, valid, train, _ = aligned(small_null)
    z_null = features(values, valid, train, mod8, 1000)[:, residue] * np.sqrt(len(train))
    assert (z_null > 5).sum() == 0


@pytest.mark.parametrize(("r", "mod", "expected"), [(10, 1000, 0.1), (1000, 1000, 0.001), (2000, 1000, 0.001),
                                                    (3, 10, 0.34)])
def test_chance_of_agreement(r, mod, expected):
    assert chance(r, mod) == pytest.approx(expected)
