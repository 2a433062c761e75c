import json
import logging

import numpy as np
import pytest
from scipy.stats import chisquare

from worker.bench import make_job
from worker.params import random_params
from worker.synth import synth_command, write_synthetic
from worker.trial import run_trial

FILES = {"survivors.npz", "train_history.json", "holdout_history.json", "meta.json"}


def test_writes_the_four_files_and_nothing_else(tmp_path):
    meta = write_synthetic(tmp_path, "planted", n_survivors=80, n_train=500, n_holdout=200, seed=4)
    assert {p.name for p in tmp_path.iterdir()} == FILES  # no temp files left behind
    assert json.loads((tmp_path / "meta.json").read_text()) == meta == {
        "prng_type": "java_lcg", "mod": 1000, "mode": "planted", "n_survivors": 80, "n_train": 500,
        "n_holdout": 200, "seed": 4}
    seeds = np.load(tmp_path / "survivors.npz")["seeds"]
    train = json.loads((tmp_path / "train_history.json").read_text())
    holdout = json.loads((tmp_path / "holdout_history.json").read_text())
    assert len(np.unique(seeds)) == 80 and (len(train), len(holdout)) == (500, 200)
    assert all(isinstance(d, int) and 0 <= d < 1000 for d in train + holdout)


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_synthetic(tmp_path / name, "planted", n_survivors=40, n_train=300, n_holdout=100, seed=seed)
    read = {name: (tmp_path / name / "train_history.json").read_text() for name in "abc"}
    assert read["a"] == read["b"] != read["c"]


def test_null_draws_are_uniform(tmp_path):
    write_synthetic(tmp_path, "null", n_survivors=10, n_train=30000, n_holdout=10000, mod=10, seed=0)
    draws = json.loads((tmp_path / "train_history.json").read_text())
    assert chisquare(np.bincount(draws, minlength=10)).pvalue > 0.001


def test_other_generator_and_modulus(tmp_path):
    meta = write_synthetic(tmp_path, "planted", n_survivors=40, n_train=300, n_holdout=100, mod=500,
                           prng="minstd")
    assert (meta["prng_type"], meta["mod"]) == ("minstd", 500)
    assert max(json.loads((tmp_path / "train_history.json").read_text())) < 500


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"mode": "both"}, "mode"),
    ({"mode": "planted", "mod": 150}, "multiple"),
    ({"mode": "null", "n_train": 100, "n_holdout": 100}, "more train"),
])
def test_refuses_what_it_cannot_make(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        write_synthetic(tmp_path, **kwargs)


def test_synth_command(tmp_path, capsys):
    assert synth_command(tmp_path / "d", "null", n_survivors=20, n_train=200, n_holdout=50, seed=3) == 0
    assert "20 survivors" in capsys.readouterr().out
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["mode"] == "null"


def best_rho(data_dir, trials=20):
    rng = np.random.default_rng(2026)
    cache: dict = {}
    return [run_trial(make_job(data_dir, random_params(rng), trial_number=n, sample_size=250), data_dir, cache).accuracy
            for n in range(trials)]


def test_random_search_finds_planted_structure_and_nothing_in_null_data(tmp_path, caplog):
    """20 parameter sets drawn uniformly from the search space: on planted data the best reaches
    rho >= 0.5, on signal-free data of the same shape the best stays far below it.

    The pool is small next to the holdout on purpose: holdout quality counts exact matches, and 1,500
    draws hold at most 1,500 of them beyond chance, so a pool of 17,126 leaves too little per seed."""
    caplog.set_level(logging.ERROR)
    rho = {}
    for mode in ("planted", "null"):
        write_synthetic(tmp_path / mode, mode, n_survivors=300, n_train=4500, n_holdout=1500, seed=0)
        rho[mode] = best_rho(tmp_path / mode)
    assert max(rho["planted"]) >= 0.5
    assert max(rho["null"]) < 0.3  # the best of 20 chance values: about 2 s.d. of rho on 250 seeds
    assert max(rho["planted"]) - max(rho["null"]) > 0.3
    assert np.median(rho["planted"]) - np.median(rho["null"]) > 0.4
