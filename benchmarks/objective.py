"""Figures of the honest number: does a trial's value measure its parameters rather than its sample, is
its chance level right, and does the search's optimum hold on fresh samples?

Everything runs in-process with worker.trial.run_trial on the `make data` demo (Step 1's folder:
about 17,000 sieve-made survivors, 4,000 / 1,000 draws) and its null variant (the same survivors,
uniform draws), two processes at a time; studies ask and tell one trial at a time with
coordinator.study's sampler, as the coordinator does, and judge themselves with coordinator.chance.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import t as student

from benchmarks.data import demo_folders
from benchmarks.report import figure
from coordinator.chance import best_of
from coordinator.settings import CONFIRM_TOP, DEFAULT_EVALUATION, confirm_evaluation
from coordinator.study import distributions, make_sampler
from worker.bench import make_job
from worker.contract import Evaluation
from worker.params import random_params
from worker.trial import run_trial

OLD = Evaluation(replicates=1, eval_size=450, nulls=200, objective="spearman_rho")  # one sample, as before
FIXED = random_params(np.random.default_rng(12345))  # the parameters held fixed across trial numbers
PROCESSES = 2
NULL_STUDIES, NULL_TRIALS = 20, 10
SEARCH_TRIALS, SEARCH_SEEDS = 100, (0, 1, 2, 3, 4)

_cache: dict = {}  # per process: the data set parsed once, as in a warm slot


def trial(data: Path, params: dict[str, Any], number: int, evaluation: Evaluation,
          confirm: bool = False) -> dict[str, Any]:
    """One trial (or a confirmation): its value, figures and seconds."""
    logging.getLogger("worker").setLevel(logging.ERROR)
    start = time.perf_counter()
    job = make_job(data, params, trial_number=number, sample_size=450, evaluation=evaluation, confirm=confirm)
    outcome = run_trial(job, data, _cache)
    return {"number": number, "params": params, "value": outcome.accuracy, "seconds": time.perf_counter() - start,
            "figures": outcome.diagnostics["figures"]}


def study(data: Path, seed: int, trials: int, evaluation: Evaluation, in_loop: bool = True) -> list[dict[str, Any]]:
    """A study's trials in order: TPE asked and told one at a time (in_loop), or every trial asked
    before any is told (the old design: random search)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opt = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
    space, done = distributions(), []
    asked = [] if in_loop else [opt.ask(space) for _ in range(trials)]
    for i in range(trials):
        t = opt.ask(space) if in_loop else asked[i]
        done.append(trial(data, t.params, t.number, evaluation))
        if in_loop:
            opt.tell(t, done[-1]["value"])
    return done


def confirmed(data: Path, records: list[dict[str, Any]], evaluation: Evaluation) -> dict[str, Any]:
    """The top CONFIRM_TOP trials evaluated again on fresh samples: the best confirmed, its interval."""
    top = sorted(records, key=lambda r: -r["value"])[:CONFIRM_TOP]
    again = [trial(data, r["params"], r["number"], confirm_evaluation(evaluation), confirm=True) for r in top]
    best = max(again, key=lambda r: r["value"])
    spread = best["figures"][evaluation.objective]
    half = student.ppf(0.975, len(spread["replicates"]) - 1) * spread["se"]
    return {"search_best": top[0]["value"], "search_trial": top[0]["number"], "confirmed": best["value"],
            "confirmed_trial": best["number"], "interval": [best["value"] - half, best["value"] + half]}


def _verdict(records: list[dict[str, Any]], objective: str) -> float:
    return best_of([(r["number"], r["value"], r["figures"][objective]["null_mean"], r["figures"][objective]["null_sd"])
                    for r in records], objective).p_value


def _pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn"))


def run_noise(work: Path) -> dict[str, Any]:
    """`objective_noise_ratio`: the s.d. of the value at fixed parameters across 10 trial numbers over
    its s.d. across 30 random parameter sets (trial numbers 100..129), on the demo, for the chosen
    design (DEFAULT_EVALUATION: replicates x eval_size survivors judged per trial) and for one sample
    of 450 judged on itself (`old_design`). `trial_s`: seconds per trial of each."""
    demo, _ = demo_folders(work)
    out = {}
    for name, evaluation in (("design", DEFAULT_EVALUATION), ("old", OLD)):
        jobs = [(demo, FIXED, n, evaluation) for n in range(10)]
        jobs += [(demo, random_params(np.random.default_rng(1000 + n)), 100 + n, evaluation) for n in range(30)]
        with _pool() as pool:
            done = list(pool.map(trial, *zip(*jobs, strict=True)))
        fixed, drawn = [r["value"] for r in done[:10]], [r["value"] for r in done[10:]]
        out[name] = {"ratio": statistics.stdev(fixed) / statistics.stdev(drawn), "sd_fixed": statistics.stdev(fixed),
                     "sd_random": statistics.stdev(drawn), "seconds": [r["seconds"] for r in done]}
    design, old = out["design"], out["old"]
    return {"objective_noise_ratio": figure(
        [design["ratio"]], "ratio", sd_fixed=figure([design["sd_fixed"]], "rho"),
        sd_random=figure([design["sd_random"]], "rho"), trial_s=figure(design["seconds"], "s"),
        old_design=figure([old["ratio"]], "ratio", sd_fixed=figure([old["sd_fixed"]], "rho"),
                          sd_random=figure([old["sd_random"]], "rho"), trial_s=figure(old["seconds"], "s")),
        design={**DEFAULT_EVALUATION.__dict__, "sample_size": 450})}


def run_chance(work: Path) -> dict[str, Any]:
    """`null_false_signal`: the share of NULL_STUDIES studies of NULL_TRIALS trials (TPE in the loop,
    sampler seeds 0..) on the null variant whose verdict is "signal" (corrected p < coordinator.chance.ALPHA).
    `demo_p`: the corrected p of a study of the same size on the demo itself; `demo_confirmed`: that
    study's best confirmed on fresh samples (confirmed_vs_search_best = search best - confirmed)."""
    demo, null = demo_folders(work)
    jobs = [(null, seed, NULL_TRIALS, DEFAULT_EVALUATION) for seed in range(NULL_STUDIES)]
    jobs.append((demo, 0, NULL_TRIALS * 2, DEFAULT_EVALUATION))
    with _pool() as pool:
        studies = list(pool.map(study, *zip(*jobs, strict=True)))
    objective = DEFAULT_EVALUATION.objective
    p_null = [_verdict(s, objective) for s in studies[:-1]]
    demo_study = studies[-1]
    check = confirmed(demo, demo_study, DEFAULT_EVALUATION)
    return {
        "null_false_signal": figure([float(np.mean([p < 0.01 for p in p_null]))], "share",
                                    null_p=figure(p_null, "p"), studies=NULL_STUDIES, trials=NULL_TRIALS,
                                    demo_p=figure([_verdict(demo_study, objective)], "p"),
                                    demo_trials=len(demo_study)),
        "confirmed_vs_search_best": figure([check["search_best"] - check["confirmed"]], "rho",
                                           search_best=figure([check["search_best"]], "rho"),
                                           confirmed=figure([check["confirmed"]], "rho"),
                                           interval=[round(x, 4) for x in check["interval"]],
                                           trials={"search": check["search_trial"],
                                                   "confirmed": check["confirmed_trial"]})}


def run_search_confirmed(work: Path) -> dict[str, Any]:
    """`tpe_vs_random_confirmed`: TPE's confirmed optimum minus random search's (the old design: every
    trial asked before any is told), both at SEARCH_TRIALS trials on the demo, paired by sampler seed;
    the mean difference over the seeds and its 95% interval (Student's t)."""
    demo, _ = demo_folders(work)
    jobs = [(demo, seed, SEARCH_TRIALS, DEFAULT_EVALUATION, in_loop) for seed in SEARCH_SEEDS
            for in_loop in (True, False)]
    with _pool() as pool:
        studies = list(pool.map(study, *zip(*jobs, strict=True)))
        checks = list(pool.map(confirmed, [demo] * len(studies), studies, [DEFAULT_EVALUATION] * len(studies)))
    tpe, rnd = [c["confirmed"] for c in checks[0::2]], [c["confirmed"] for c in checks[1::2]]
    diff = [a - b for a, b in zip(tpe, rnd, strict=True)]
    half = student.ppf(0.975, len(diff) - 1) * statistics.stdev(diff) / math.sqrt(len(diff))
    mean = statistics.mean(diff)
    return {"tpe_vs_random_confirmed": figure(diff, "rho", mean=round(mean, 4),
                                              interval=[round(mean - half, 4), round(mean + half, 4)],
                                              tpe_confirmed=figure(tpe, "rho"), random_confirmed=figure(rnd, "rho"),
                                              seeds=list(SEARCH_SEEDS), trials=SEARCH_TRIALS)}
