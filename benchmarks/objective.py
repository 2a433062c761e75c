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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import f as fisher
from scipy.stats import t as student

from benchmarks.data import demo_folders
from benchmarks.report import figure
from coordinator.chance import ALPHA, best_of
from coordinator.settings import CONFIRM_TOP, DEFAULT_EVALUATION, confirm_evaluation
from coordinator.study import distributions, make_sampler
from worker.bench import SAMPLE_SIZE, make_job
from worker.contract import Evaluation
from worker.params import random_params
from worker.trial import run_trial

OLD = Evaluation(replicates=1, eval_size=450, nulls=200, objective="spearman_rho")  # one sample, as before
FIXED = random_params(np.random.default_rng(12345))  # the parameters held fixed across trial numbers
PROCESSES = 2
NULL_STUDIES, NULL_TRIALS = 20, 10
SEARCH_TRIALS, SEARCH_SEEDS = 100, (0, 1, 2, 3, 4)

_cache: dict = {}  # per process: the data set parsed once, as in a warm slot


def trial(data: Path, params: dict[str, Any], number: int, evaluation: Evaluation, confirm: bool = False,
          sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """One trial (or a confirmation): its value, figures, rankings and seconds."""
    logging.getLogger("worker").setLevel(logging.ERROR)
    start = time.perf_counter()
    job = make_job(data, params, trial_number=number, sample_size=sample_size, evaluation=evaluation,
                   confirm=confirm)
    outcome = run_trial(job, data, _cache)
    return {"number": number, "params": params, "value": outcome.accuracy, "seconds": time.perf_counter() - start,
            "figures": outcome.diagnostics["figures"], "ranked": outcome.diagnostics["ranked"]}


def study(data: Path, seed: int, trials: int, evaluation: Evaluation, in_loop: bool = True) -> list[dict[str, Any]]:
    """A study's trials in order: TPE asked and told one at a time (in_loop), or every trial asked
    before any is told (the old design: random search)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    opt = optuna.create_study(direction="maximize", sampler=make_sampler(seed))
    space, done = distributions(), []
    asked = [] if in_loop else [opt.ask(space) for _ in range(trials)]
    for i in range(trials):
        t = opt.ask(space) if in_loop else asked[i]
        done.append({k: v for k, v in trial(data, t.params, t.number, evaluation).items() if k != "ranked"})
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
    return best_of([(r["number"], *(r["figures"][objective][k] for k in ("value", "null_mean", "null_sd")))
                    for r in records], objective).p_value


def pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn"))


def ratio_interval(ratio: float, n_fixed: int, n_random: int) -> list[float]:
    """A 95% interval for a ratio of two s.d.s from n_fixed and n_random values (F distribution, as if
    both were normal): with 10 and 30 values it spans about 0.6x to 1.9x the ratio measured."""
    df1, df2 = n_fixed - 1, n_random - 1
    low, high = ratio / math.sqrt(fisher.ppf(0.975, df1, df2)), ratio * math.sqrt(fisher.ppf(0.975, df2, df1))
    return [round(low, 4), round(high, 4)]


def run_noise(work: Path) -> dict[str, Any]:
    """`objective_noise_ratio`: the s.d. of the value at fixed parameters across 10 trial numbers over
    its s.d. across 30 random parameter sets (trial numbers 100..129), on the demo, for the chosen
    design (DEFAULT_EVALUATION: replicates x eval_size survivors judged per trial) and for one sample
    of 450 judged on itself (`old_design`). `trial_s`: seconds per trial of each; `interval`: the ratio's
    95% interval, which 10 and 30 values leave wide."""
    demo, _ = demo_folders(work)
    out = {}
    for name, evaluation in (("design", DEFAULT_EVALUATION), ("old", OLD)):
        jobs = [(demo, FIXED, n, evaluation) for n in range(10)]
        jobs += [(demo, random_params(np.random.default_rng(1000 + n)), 100 + n, evaluation) for n in range(30)]
        with pool() as workers:
            done = list(workers.map(trial, *zip(*jobs, strict=True)))
        fixed, drawn = [r["value"] for r in done[:10]], [r["value"] for r in done[10:]]
        ratio = statistics.stdev(fixed) / statistics.stdev(drawn)
        out[name] = {"ratio": ratio, "interval": ratio_interval(ratio, len(fixed), len(drawn)),
                     "sd_fixed": statistics.stdev(fixed), "sd_random": statistics.stdev(drawn),
                     "seconds": [r["seconds"] for r in done]}
    design, old = out["design"], out["old"]
    return {"objective_noise_ratio": figure(
        [design["ratio"]], "ratio", interval=design["interval"], sd_fixed=figure([design["sd_fixed"]], "rho"),
        sd_random=figure([design["sd_random"]], "rho"), trial_s=figure(design["seconds"], "s"),
        old_design=figure([old["ratio"]], "ratio", interval=old["interval"], sd_fixed=figure([old["sd_fixed"]], "rho"),
                          sd_random=figure([old["sd_random"]], "rho"), trial_s=figure(old["seconds"], "s")),
        design={**DEFAULT_EVALUATION.__dict__, "sample_size": 450})}


def run_chance(work: Path) -> dict[str, Any]:
    """`null_false_signal`: the share of NULL_STUDIES studies of NULL_TRIALS trials (TPE in the loop,
    sampler seeds 0..) on the null variant whose verdict is "signal" (corrected p < coordinator.chance.ALPHA),
    for Spearman ρ and (`top_lift`) for the top-weighted figure every trial also records. `demo_p`: the
    corrected p of a study of twice that size on the demo; `demo_confirmed`: that study's best confirmed
    on fresh samples (confirmed_vs_search_best = search best - confirmed). `top_lift_study`: the same
    study on the demo optimising the top-weighted figure (--objective top_lift), its corrected p for
    either figure."""
    demo, null = demo_folders(work)
    lift = replace(DEFAULT_EVALUATION, objective="top_lift")
    jobs = [(null, seed, NULL_TRIALS, DEFAULT_EVALUATION) for seed in range(NULL_STUDIES)]
    jobs += [(demo, 0, NULL_TRIALS * 2, DEFAULT_EVALUATION), (demo, 0, NULL_TRIALS * 2, lift)]
    with pool() as workers:
        studies = list(workers.map(study, *zip(*jobs, strict=True)))
    nulls, demo_study, lift_study = studies[:NULL_STUDIES], studies[-2], studies[-1]
    check = confirmed(demo, demo_study, DEFAULT_EVALUATION)

    def false_signal(objective: str) -> tuple[float, list[float]]:
        p = [_verdict(s, objective) for s in nulls]
        return float(np.mean([v < ALPHA for v in p])), p

    rho_share, rho_p = false_signal("spearman_rho")
    lift_share, lift_p = false_signal("top_lift")
    return {
        "null_false_signal": figure([rho_share], "share", null_p=figure(rho_p, "p"), studies=NULL_STUDIES,
                                    trials=NULL_TRIALS, top_lift=figure([lift_share], "share",
                                                                        null_p=figure(lift_p, "p")),
                                    demo_p=figure([_verdict(demo_study, "spearman_rho")], "p"),
                                    demo_trials=len(demo_study),
                                    top_lift_study={"p_top_lift": _verdict(lift_study, "top_lift"),
                                                    "p_spearman_rho": _verdict(lift_study, "spearman_rho"),
                                                    "best_top_lift": max(r["value"] for r in lift_study)}),
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
    with pool() as workers:
        studies = list(workers.map(study, *zip(*jobs, strict=True)))
        checks = list(workers.map(confirmed, [demo] * len(studies), studies, [DEFAULT_EVALUATION] * len(studies)))
    tpe, rnd = [c["confirmed"] for c in checks[0::2]], [c["confirmed"] for c in checks[1::2]]
    diff = [a - b for a, b in zip(tpe, rnd, strict=True)]
    half = student.ppf(0.975, len(diff) - 1) * statistics.stdev(diff) / math.sqrt(len(diff))
    mean = statistics.mean(diff)
    return {"tpe_vs_random_confirmed": figure(diff, "rho", mean=round(mean, 4),
                                              interval=[round(mean - half, 4), round(mean + half, 4)],
                                              tpe_confirmed=figure(tpe, "rho"), random_confirmed=figure(rnd, "rho"),
                                              seeds=list(SEARCH_SEEDS), trials=SEARCH_TRIALS)}
