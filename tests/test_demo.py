"""The sieve-made demo: Step 1's files in Step 1's format, survivors a real sieve kept, structure a
search can find, and a null variant with the same survivors and nothing to find."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from tests import reference
from worker import demo
from worker.bench import make_job
from worker.params import random_params
from worker.prng import GENERATORS
from worker.sieve import Candidates, sieve_pass
from worker.trial import run_trial

STEP1_FILES = {"bidirectional_survivors.json", "bidirectional_survivors_binary.npz",
               "bidirectional_survivors_binary.meta.json", "optimal_window_config.json", "train_history.json",
               "holdout_history.json", demo.LOTTERY, demo.TRUTH}
RECORD_KEYS = ["seed", "forward_match_rate", "reverse_match_rate", "score", "window_size", "offset", "skip_min",
               "skip_max", "skip_range", "sessions", "trial_number", "prng_base", "skip_mode", "prng_type",
               "forward_count", "reverse_count", "bidirectional_count", "intersection_count", "intersection_ratio",
               "forward_only_count", "reverse_only_count", "survivor_overlap_ratio", "bidirectional_selectivity",
               "intersection_weight"]


def read_json(path: Path):
    return json.loads(path.read_text())


def test_writes_step1s_files_in_step1s_format(small_demo: Path):
    assert {p.name for p in small_demo.iterdir()} == STEP1_FILES  # no temp files left behind
    records = read_json(small_demo / "bidirectional_survivors.json")
    assert [r["seed"] for r in records] == sorted({r["seed"] for r in records})  # one per seed, by seed
    assert all(list(r) == RECORD_KEYS for r in records)
    with np.load(small_demo / "bidirectional_survivors_binary.npz") as npz:
        assert npz.files == list(demo.NPZ_ORDER) and len(npz.files) == 22
        assert npz["seeds"].dtype == np.uint32 and npz["offset"].dtype == np.int32
        assert npz["score"].dtype == np.float32 and npz["prng_type"].dtype == np.uint8
        assert npz["seeds"].tolist() == [r["seed"] for r in records]
        assert npz["skip_min"].tolist() == [r["skip_min"] for r in records]
        assert np.array_equal(npz["forward_matches"], np.array([r["forward_match_rate"] for r in records], np.float32))
    sidecar = read_json(small_demo / "bidirectional_survivors_binary.meta.json")
    assert list(sidecar)[:4] == ["version", "source_file", "output_file", "survivor_count"]
    assert sidecar["survivor_count"] == len(records) and sidecar["encodings"]["prng_type"]["java_lcg_reverse"] == 1
    config = read_json(small_demo / "optimal_window_config.json")
    assert list(config)[:6] == ["window_size", "offset", "skip_min", "skip_max", "sessions", "prng_type"]
    assert "mod" not in config and config["agent_metadata"]["pipeline_step"] == 1
    lottery = [d["draw"] for d in read_json(small_demo / demo.LOTTERY)]
    train, holdout = read_json(small_demo / "train_history.json"), read_json(small_demo / "holdout_history.json")
    assert train + holdout == lottery and len(train) == int(0.8 * len(lottery))
    assert (small_demo / "train_history.json").read_text().startswith("[\n  ")  # indent=2, as Step 1 writes it


def test_every_survivor_passed_the_sieve_and_the_generators_are_among_them(small_demo: Path):
    records = read_json(small_demo / "bidirectional_survivors.json")
    truth = read_json(small_demo / demo.TRUTH)
    draws = np.array(read_json(small_demo / "train_history.json") + read_json(small_demo / "holdout_history.json"))
    by_trial = {}
    for r in records:
        by_trial.setdefault(r["trial_number"], []).append(r)
    for number, trial in enumerate(truth["trials"], start=1):
        window = draws[trial["offset"]:trial["offset"] + trial["window"]]
        for r in by_trial[number][:5]:  # each passed forward at its best skip in range, by the plain loop
            best = max(sum(v == d for v, d in zip(reference.aligned_stream(
                "java_lcg", r["seed"], trial["offset"], k, False, trial["window"], trial["offset"], trial["window"],
                1000)[0], window, strict=True)) for k in range(trial["skip_min"], trial["skip_max"] + 1))
            assert best / trial["window"] == pytest.approx(r["forward_match_rate"])
            assert r["forward_match_rate"] >= np.float32(trial["forward_threshold"])
    seeds = {r["seed"] for r in records}
    for generator, passed in zip(truth["generators"], truth["passes"], strict=True):
        assert passed["generator_forward"]  # it made most of its window: it always passes forward
        assert generator["in_pool"] == passed["generator_reverse"] == (generator["seed"] in seeds)
    low19 = sum(any((s - g["seed"]) % 2**19 == 0 for g in truth["generators"]) for s in seeds)
    assert low19 > len(seeds) // 4  # the designed part of the candidates: relatives of the generators


def test_the_sieve_pass_counts_as_the_plain_loop_does():
    gen = GENERATORS["java_lcg"]
    window = np.random.default_rng(5).integers(0, 1000, 30)
    candidates = Candidates(1000, 300, np.array([7, 2**40 + 1], dtype=np.uint64))
    passed = sieve_pass(gen, candidates, window, 11, range(0, 3), 0.0, 1000, reverse=True)
    for seed, rate, skip in zip(passed.seeds[::37].tolist(), passed.rate[::37], passed.skip[::37], strict=True):
        counts = [sum(v == d for v, d in zip(reference.aligned_stream("java_lcg", seed, 11, k, False, 30, 11, 30,
                                                                      1000)[0], window[::-1], strict=True))
                  for k in range(3)]
        assert rate == np.float32(max(counts) / 30) and skip == counts.index(max(counts))
    assert len(passed.seeds) == len(candidates)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = demo.make("small", 3), demo.make("small", 3), demo.make("small", 4)
    assert np.array_equal(a.draws, b.draws) and a.records == b.records
    assert not np.array_equal(a.draws, c.draws)


def test_the_null_variant_keeps_the_survivors_and_draws_uniformly(small_demo: Path, small_null: Path):
    assert read_json(small_null / "bidirectional_survivors.json") == read_json(small_demo /
                                                                               "bidirectional_survivors.json")
    with np.load(small_demo / "bidirectional_survivors_binary.npz") as a, \
            np.load(small_null / "bidirectional_survivors_binary.npz") as b:
        assert all(np.array_equal(a[name], b[name]) for name in a.files)
    draws = read_json(small_null / "train_history.json") + read_json(small_null / "holdout_history.json")
    assert draws != read_json(small_demo / "train_history.json") + read_json(small_demo / "holdout_history.json")
    assert chisquare(np.bincount(np.array(draws) % 10, minlength=10)).pvalue > 0.001
    assert read_json(small_null / demo.TRUTH)["null"] is True


def values(data_dir: Path, trials: int = 12) -> list[float]:
    rng = np.random.default_rng(2026)
    cache: dict = {}
    return [run_trial(make_job(data_dir, random_params(rng), trial_number=n, sample_size=250), data_dir, cache).accuracy
            for n in range(trials)]


def test_random_search_finds_its_structure_and_nothing_in_the_null_variant(small_demo, small_null, caplog):
    caplog.set_level(logging.ERROR)
    found, null = values(small_demo), values(small_null)
    assert np.median(found) > 0.3 and max(null) < 0.3
    assert np.median(found) - np.median(null) > 0.25


def test_demo_command_says_what_it_wrote(tmp_path: Path, capsys):
    assert demo.demo_command(tmp_path / "d", "small", 1, tmp_path / "n") == 0
    said = capsys.readouterr().out
    assert "survivors" in said and str(tmp_path / "n") in said and "java_lcg mod 1000" in said
    assert (tmp_path / "n" / demo.TRUTH).is_file()
