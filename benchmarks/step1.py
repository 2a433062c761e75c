"""Figures of Step 1's survivors: what the objective can see on the sieve-made demo at each sample size,
what choosing each survivor's skip costs, and how fast the loader reads the largest pool seen.

Trials run in-process with worker.trial.run_trial (benchmarks/objective.py's helper), two processes at a
time, on the `make data` demo (about 17,000 sieve-made survivors, 4,000 / 1,000 draws) and its null
variant (the same survivors, uniform draws).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import demo_folders
from benchmarks.objective import pool, trial
from benchmarks.report import figure
from coordinator.chance import best_of
from coordinator.settings import DEFAULT_EVALUATION
from worker import demo as demo_data
from worker.bench import make_job
from worker.contract import Evaluation
from worker.data import load_dataset
from worker.params import random_params
from worker.survivors import read_survivors

SIZES = (450, 2_000, 8_000, None)  # None: the whole pool
SIGNAL_TRIALS = 6  # parameter sets per size, the same on the demo and on its null
SKIP_WIDTHS = (0, 8, 32)
LARGEST_POOL = 1_384_186  # the largest Step 1 pool seen (PIPELINE_CONTRACTS.md)
STEP1_NPZ = "bidirectional_survivors_binary.npz"


def _ranks(data: Path, records: list[dict[str, Any]]) -> list[float]:
    """Where the generating seeds in the pool were ranked, as a share of each trial's survivors (0: first)."""
    seeds = read_survivors(data / STEP1_NPZ).seeds
    truth = json.loads((data / demo_data.TRUTH).read_text())
    at = {int(i) for gen in truth["generators"] for i in np.flatnonzero(seeds == np.uint64(gen["seed"]))}
    return [ranked.index(i) / len(ranked) for r in records for ranked in r["ranked"] for i in at.intersection(ranked)]


def run_signal(work: Path) -> dict[str, Any]:
    """`demo_signal_<n>`: the best Spearman ρ of SIGNAL_TRIALS random parameter sets at sample size n
    (one sample, trained on and judged on its n survivors), on the demo and, with the same parameters
    and trial numbers, on its null variant; `p` is the demo's best against the chance level of the
    best of the trials (coordinator/chance.py), `null_p` the same on the null; `generator_share` where
    the generating seeds were ranked whenever a sample held them (0: first, 0.5: chance)."""
    demo, null = demo_folders(work)
    total = len(read_survivors(demo / STEP1_NPZ).seeds)
    out = {}
    for size in SIZES:
        n = size or total
        evaluation = Evaluation(replicates=1, eval_size=n, nulls=200, objective="spearman_rho")
        params = [random_params(np.random.default_rng(2000 + i)) for i in range(SIGNAL_TRIALS)]
        jobs = [(data, p, i, evaluation, False, n) for data in (demo, null) for i, p in enumerate(params)]
        with pool() as workers:
            done = list(workers.map(trial, *zip(*jobs, strict=True)))
        found, chance = done[:SIGNAL_TRIALS], done[SIGNAL_TRIALS:]
        shares = _ranks(demo, found)
        out[f"demo_signal_{'pool' if size is None else size}"] = figure(
            [r["value"] for r in found], "rho", sample_size=n, null=figure([r["value"] for r in chance], "rho"),
            p=_corrected(found), null_p=_corrected(chance), trial_s=figure([r["seconds"] for r in found], "s"),
            generator_share=figure(shares or [None], "share"))
    return out


def _corrected(records: list[dict[str, Any]]) -> float | None:
    figures = [(r["number"], *(r["figures"]["spearman_rho"][k] for k in ("value", "null_mean", "null_sd")))
               for r in records]
    p = best_of(figures, "spearman_rho").p_value
    return None if p is None else float(f"{p:.3g}")


def _widened(demo: Path, out: Path, width: int) -> Path:
    """The demo folder with every survivor's skip range [skip_min, skip_min + width]."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_history.json", "holdout_history.json", "optimal_window_config.json"):
        shutil.copy(demo / name, out / name)
    with np.load(demo / STEP1_NPZ) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["skip_max"] = arrays["skip_min"] + width
    arrays["skip_range"] = np.full_like(arrays["skip_range"], width)
    np.savez_compressed(out / STEP1_NPZ, **arrays)
    return out


def run_skip_cost(work: Path, repeats: int = 4) -> dict[str, Any]:
    """`skip_search_s_<w>`: seconds per trial at the default design (DEFAULT_EVALUATION) when every
    survivor's skip range is w + 1 skips wide (the demo with skip_max = skip_min + w), the same
    parameters and trial numbers for each width, one warm data cache per width (as in a warm slot)."""
    demo, _ = demo_folders(work)
    params = random_params(np.random.default_rng(7))
    out = {}
    for width in SKIP_WIDTHS:
        folder = _widened(demo, work / f"skip{width}", width)
        trial(folder, params, 0, DEFAULT_EVALUATION)  # untimed: parses the data into the cache
        runs = [trial(folder, params, n, DEFAULT_EVALUATION) for n in range(1, repeats + 1)]
        out[f"skip_search_s_{width}"] = figure([r["seconds"] for r in runs], "s", skips_per_survivor=width + 1)
    return out


def _largest_pool(demo: Path, out: Path) -> Path:
    """A Step 1 folder of LARGEST_POOL survivors: the demo's 22 arrays repeated, with distinct seeds."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train_history.json", "holdout_history.json"):
        shutil.copy(demo / name, out / name)
    with np.load(demo / STEP1_NPZ) as npz:
        arrays = {name: np.resize(npz[name], LARGEST_POOL) for name in npz.files}
    arrays["seeds"] = np.random.default_rng(0).choice(2**32, LARGEST_POOL, replace=False).astype(np.uint32)
    np.savez_compressed(out / STEP1_NPZ, **arrays)
    return out


def run_loader(work: Path, repeats: int = 3) -> dict[str, Any]:
    """`loader_survivors_per_s`: survivors per second through the worker's loader (worker.data: the
    NPZ's arrays checked field by field, repeats dropped, and the two histories), cold (no cache), on a
    Step 1 NPZ of LARGEST_POOL survivors in the converter's format (22 arrays, compressed)."""
    demo, _ = demo_folders(work)
    folder = _largest_pool(demo, work / "largest")
    job = make_job(folder, random_params(np.random.default_rng(0)))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        data = load_dataset(job.payload, folder)
        seconds.append(time.perf_counter() - start)
    assert len(data.survivors) == LARGEST_POOL
    return {"loader_survivors_per_s": figure([LARGEST_POOL / s for s in seconds], "survivors/s",
                                             seconds=figure(seconds, "s"), survivors=LARGEST_POOL,
                                             npz_mb=round((folder / STEP1_NPZ).stat().st_size / 2**20, 1))}
