"""Figure 1: one trial's wall time at the proposal's scale, phase by phase (worker.bench's job and corner)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import demo_folders
from benchmarks.report import figure
from coordinator.settings import DEFAULT_EVALUATION
from worker.bench import HEAVIEST, make_job
from worker.contract import Evaluation
from worker.params import random_params
from worker.trial import run_trial


def run(work: Path, repeats: int = 5, typical: int = 10) -> dict[str, Any]:
    """In-process trials on the `make data` demo (Step 1's folder: about 17,000 sieve-made survivors,
    sample 450, 4,000 train / 1,000 holdout draws, java_lcg mod 1000) with one warm data cache, as in a
    warm slot. One untimed trial first pays the first-use costs a warm slot pays once (torch's lazy
    imports). `trial_seconds`: one sample of 450 trained on and judged on itself (the unit of work of the
    replaced system's trial) at worker.bench's heaviest corner of the search space (max_offset 15, 10
    windows of 200, residue mods 20/150/1000, hidden layers 256_128_64, batch size 32), a different
    sample each repeat, split into the trial's own phase timings; `trial_seconds_design`: the same at
    the default design (DEFAULT_EVALUATION: 10 replicates, each trained on 450 and judged on 1,500,
    with 200 permutations for the chance level); `typical_s`: parameters drawn at random."""
    data, _ = demo_folders(work)
    cache: dict = {}
    single = Evaluation(replicates=1, eval_size=450, nulls=200, objective="spearman_rho")
    run_trial(make_job(data, HEAVIEST, trial_number=0, evaluation=DEFAULT_EVALUATION), data, cache)
    def timed(params: dict[str, Any], number: int, evaluation: Evaluation) -> dict[str, float]:
        start = time.perf_counter()
        outcome = run_trial(make_job(data, params, trial_number=number, evaluation=evaluation), data, cache)
        return {**outcome.timings, "total": time.perf_counter() - start}

    out = {}
    for key, evaluation in (("trial_seconds", single), ("trial_seconds_design", DEFAULT_EVALUATION)):
        heavy = [timed(HEAVIEST, number, evaluation) for number in range(1, repeats + 1)]
        rng = np.random.default_rng(0)
        drawn = [timed(random_params(rng), number, evaluation) for number in range(1, typical + 1)]
        phases = {phase: figure([run[phase] * 1000 for run in heavy], "ms") for phase in heavy[0] if phase != "total"}
        out[key] = figure([run["total"] for run in heavy], "s", phases_ms=phases,
                          typical_s=figure([run["total"] for run in drawn], "s"),
                          design={**evaluation.__dict__, "sample_size": 450})
    return out
