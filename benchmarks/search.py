"""Figures 5 and 6: does in-loop TPE beat what the old design ran, and what the study costs the head.

The old design asked Optuna for all 100 trials before telling it any result, so TPE never saw one: its
trials were its startup trials, i.e. random search. That is reproduced exactly (same sampler settings,
100 asks, then the trials), against ask -> run -> tell one trial at a time.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from benchmarks.data import demo_folders
from benchmarks.report import figure
from coordinator.study import Study, distributions, make_sampler, storage_path
from worker.bench import make_job
from worker.params import random_params
from worker.trial import run_trial

# The proposal's scale on the sieve-made demo (about 17,000 survivors, sample 450, 4,000 / 1,000 draws).
SCALE = {"data": "the sieve-made demo (make data)", "n_train": 4000, "n_holdout": 1000}
SAMPLE_SIZE = 450
TRIALS = 100
SEEDS = (0, 1, 2, 3, 4)
MARKS = (25, 50, 100)
NULL_TRIALS = 20
PROCESSES = 2

_cache: dict = {}  # per process: the data set parsed once, as in a warm slot


def curve(data: Path, seed: int, in_loop: bool, trials: int = TRIALS) -> list[float]:
    """Trial values in order, from coordinator.study's sampler with this seed: asked, run and told one
    at a time (in_loop), or all asked before any is run (the old design)."""
    logging.getLogger("worker").setLevel(logging.ERROR)  # one line per trial otherwise

    def value(trial: optuna.Trial) -> float:
        job = make_job(data, trial.params, trial_number=trial.number, sample_size=SAMPLE_SIZE)
        return run_trial(job, data, _cache).accuracy

    study = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
    space = distributions()
    if not in_loop:
        return [value(trial) for trial in [study.ask(space) for _ in range(trials)]]
    values = []
    for _ in range(trials):
        trial = study.ask(space)
        values.append(value(trial))
        study.tell(trial, values[-1])
    return values


def run_search(work: Path) -> dict[str, Any]:
    """On the sieve-made demo at the scale in `scale` (sample `sample_size` per trial, different per trial),
    for each sampler seed 0..4: 100 trials of the old design (all asked before any told: random search)
    and 100 trials of in-loop TPE (coordinator.study.make_sampler: seeded, constant_liar, multivariate;
    ask -> run -> tell one at a time), run in-process with worker.trial.run_trial (no SSH), two
    processes at a time. Trial number k seeds trial k's sample in both, so both see the same samples.
    `tpe_trials_to_random_best`: the first trial count at which TPE's best so far reaches the best of
    the old design's 100 (not reached within 100: null, counted above every number in the median).
    `best_at`: best value after 25/50/100 trials. `null_check`: best of the first 20 old-design trials
    on the demo against 20 random trials on its null variant (the same survivors, uniform draws)."""
    planted, null = demo_folders(work)
    jobs = [(planted, seed, in_loop, TRIALS) for seed in SEEDS for in_loop in (True, False)]
    jobs.append((null, 0, False, NULL_TRIALS))
    with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
        curves = list(pool.map(curve, *zip(*jobs, strict=True)))
    tpe, old, null_values = curves[0:-1:2], curves[1:-1:2], curves[-1]
    reached = []
    for t, o in zip(tpe, old, strict=True):
        best = np.maximum.accumulate(t)
        hits = np.flatnonzero(best >= max(o))
        reached.append(int(hits[0]) + 1 if len(hits) else None)
    best_at = {f"{name}_{mark}": figure([max(c[:mark]) for c in runs], "rho")
               for name, runs in (("tpe", tpe), ("old_random", old)) for mark in MARKS}
    return {"tpe_trials_to_random_best": figure(
        reached, "trials", best_at=best_at, scale={**SCALE, "sample_size": SAMPLE_SIZE, "mod": 1000},
        null_check={"planted_best_of_20": figure([max(c[:NULL_TRIALS]) for c in old], "rho"),
                    "null_best_of_20": figure([max(null_values)], "rho")})}


def run_ask_tell(work: Path, existing: int = 1000, running: int = 25, repeats: int = 20) -> dict[str, Any]:
    """Head-side latency of one Study.ask() + Study.tell_value() (coordinator.study: journal file with
    fsync, TPE as configured) when the study already holds `existing` completed trials (random
    parameters and values, added directly) and `running` asked but untold trials, as with 26 busy slots
    (constant_liar takes them into account). Each repeat adds one trial."""
    study = Study("asktell", storage_path("asktell", work), seed=0, create=True)
    rng = np.random.default_rng(0)
    study.study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=study.dists,
                                                      value=float(rng.uniform(-0.2, 0.5))) for _ in range(existing)])
    for _ in range(running):
        study.ask()
    asks, tells = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        number, _ = study.ask()
        asked = time.perf_counter()
        study.tell_value(number, float(rng.uniform(-0.2, 0.5)))
        asks.append((asked - start) * 1000)
        tells.append((time.perf_counter() - asked) * 1000)
    return {"ask_tell_ms_1000": figure([a + t for a, t in zip(asks, tells, strict=True)], "ms",
                                       ask_ms=figure(asks, "ms"), tell_ms=figure(tells, "ms"),
                                       existing=existing, running=running)}
