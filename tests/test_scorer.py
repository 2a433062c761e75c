import json

import numpy as np
import pytest

from worker.params import SCORER_SPACE
from worker.prng import GENERATORS
from worker.scorer import FEATURES, chance, features, quality
from worker.synth import write_synthetic

JAVA = GENERATORS["java_lcg"]


class SurvivorScorer:
    """The scorer on unaligned java_lcg seeds: draw t of the window at stream position start + t."""

    @staticmethod
    def features(seeds, draws, start, params, mod, generator):
        return features(generator.draws(seeds, start, len(draws) + params["max_offset"], mod), None, draws,
                        params, mod)

    @staticmethod
    def quality(seeds, draws, start, mod, generator):
        return quality(generator.draws(seeds, start, len(draws), mod), None, draws, mod)
BASE = {"residue_mod_1": 10, "residue_mod_2": 100, "residue_mod_3": 1000, "max_offset": 5,
        "temporal_window_size": 100, "temporal_num_windows": 5, "min_confidence_threshold": 0.005}
# One change per scorer parameter, each within the search space.
CHANGES = {"residue_mod_1": 7, "residue_mod_2": 73, "residue_mod_3": 500, "max_offset": 15,
           "temporal_window_size": 60, "temporal_num_windows": 9, "min_confidence_threshold": 0.02}


def read(data_dir):
    seeds = np.load(data_dir / "survivors.npz")["seeds"]
    train = np.array(json.loads((data_dir / "train_history.json").read_text()))
    holdout = np.array(json.loads((data_dir / "holdout_history.json").read_text()))
    return seeds, train, holdout


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    write_synthetic(out, "planted", n_survivors=200, n_train=3000, n_holdout=1000, seed=3)
    return read(out)


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
    seeds, train, _ = planted
    x = SurvivorScorer.features(seeds, train, 1, BASE, 1000, JAVA)
    assert x.shape == (len(seeds), len(FEATURES)) and x.dtype == np.float32
    assert np.isfinite(x).all()


def test_the_search_space_and_the_sensitivity_test_cover_the_same_parameters():
    assert set(CHANGES) == set(BASE) == set(SCORER_SPACE)
    assert all(SCORER_SPACE[k].check(v) for k, v in {**BASE, **CHANGES}.items())


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_scorer_parameter_alone_changes_the_features(planted, name):
    seeds, train, _ = planted
    before = SurvivorScorer.features(seeds, train, 1, BASE, 1000, JAVA)
    after = SurvivorScorer.features(seeds, train, 1, {**BASE, name: CHANGES[name]}, 1000, JAVA)
    assert not np.allclose(before, after)


def test_features_do_not_grow_with_the_window(tmp_path):
    """Rates, not counts: on signal-free data every feature sits at its chance level whatever the
    window's length (the old 'number of predictions' was 4x larger on 4,000 draws than on 1,000)."""
    write_synthetic(tmp_path, "null", n_survivors=300, n_train=4000, n_holdout=100, seed=1)
    seeds, train, _ = read(tmp_path)
    short = SurvivorScorer.features(seeds, train[:1000], 1, BASE, 1000, JAVA).mean(axis=0)
    long = SurvivorScorer.features(seeds, train, 1, BASE, 1000, JAVA).mean(axis=0)
    assert np.abs(short - long).max() < 0.05
    assert np.abs(long).max() < 0.1


def test_planted_sources_stand_out_and_null_seeds_do_not(planted, tmp_path):
    seeds, train, holdout = planted
    exact = FEATURES.index("exact")
    z = SurvivorScorer.features(seeds, train, 1, BASE, 1000, JAVA)[:, exact] * np.sqrt(len(train))
    assert (z > 5).mean() > 0.2  # families are a large share of the planted pool
    write_synthetic(tmp_path, "null", n_survivors=200, n_train=3000, n_holdout=1000, seed=3)
    null_seeds, null_train, _ = read(tmp_path)
    z_null = SurvivorScorer.features(null_seeds, null_train, 1, BASE, 1000, JAVA)[:, exact] * np.sqrt(3000)
    assert (z_null > 5).sum() == 0


@pytest.mark.parametrize(("r", "mod", "expected"), [(10, 1000, 0.1), (1000, 1000, 0.001), (2000, 1000, 0.001),
                                                    (3, 10, 0.34)])
def test_chance_of_agreement(r, mod, expected):
    assert chance(r, mod) == pytest.approx(expected)
