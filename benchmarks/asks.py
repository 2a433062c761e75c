"""Figure: how many trials a second the study can hand the scheduler's slots (coordinator/study.py).

The real Scheduler and the real Step 2 source over a journal-file study, with slots whose trials take no
time: what limits the rate is the head's side of a trial (ask, job file, journal syncs, archive, tell)
and above all the sampler.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from benchmarks.dispatch import Timeline
from benchmarks.fake_worker import fixed_diagnostics
from benchmarks.report import figure
from coordinator import results
from coordinator.inventory import Rig
from coordinator.outcome import Outcome
from coordinator.scheduler import Scheduler, Task
from coordinator.settings import RunSettings, new_run_id
from coordinator.step2 import Step2Source
from coordinator.study import ASK_PROCESSES, Study, distributions, storage_path
from worker import contract
from worker.contract import DataRef, Evaluation
from worker.params import random_params

SLOTS = 26
STUDY_SIZES = (1000, 100)
REPEATS = 3
TRIALS = 500
SETTLE = 150  # trials told before the rate is taken: the ask processes start and replay the journal


class InstantSlot:
    """An Executor whose trials take no time: it builds the job as a warm slot does (job file, the
    trial's dispatch in the study, a journal sync) and returns a valid result at once."""

    def __init__(self, source: Step2Source, rig: Rig, index: int):
        self.source, self.rig, self.index = source, rig, index

    def start(self) -> None:
        pass

    def execute(self, task: Task) -> Outcome:
        job = self.source.build(task, self.rig)
        value = (job.trial_number * 0.618034) % 1.0
        record = contract.make_result(job.identity(), accuracy=value, error=None, diagnostics=fixed_diagnostics(value))
        return Outcome(True, value=value, record=record)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


def _preloaded(path: Path, name: str, trials: int, seed: int) -> None:
    """A study of `trials` completed trials (random parameters and values), written as a plain writer."""
    study = optuna.create_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))),
                                direction="maximize")
    rng = np.random.default_rng(seed)
    study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=distributions(),
                                                value=float(rng.uniform(-0.2, 0.5))) for _ in range(trials)])


def capacity(work: Path, existing: int, ask_processes: int, seed: int) -> float:
    """Trials told per second, once settled, by `SLOTS` instant slots asking a study that holds `existing`
    completed trials when the run begins."""
    name = f"capacity{existing}_{ask_processes}_{seed}"
    path = storage_path(name, work / "optuna_studies")
    path.parent.mkdir(parents=True, exist_ok=True)
    _preloaded(path, name, existing, seed)
    study = Study(name, path, seed=seed, create=False, ask_processes=ask_processes)
    settings = RunSettings(study=name, run_id=new_run_id(), code_hash=contract.code_hash(), prng_type="java_lcg",
                           mod=1000, sample_size=4, timeout_s=60.0,
                           data={"survivors": DataRef("data/survivors.npz", "0" * 64)},
                           evaluation=Evaluation(1, 4, 0, "spearman_rho"))
    source = Step2Source(study, settings, results.Archive(name, work / "runs"), TRIALS, [], work)
    rig = Rig(name="head", python="python", workdir=str(work), slots=SLOTS, local=True)
    timeline = Timeline()
    try:
        Scheduler(source, [InstantSlot(source, rig, i) for i in range(SLOTS)], timeline).run()
    finally:
        study.close()
    if timeline.failures:
        raise RuntimeError("benchmark trials failed: " + "; ".join(timeline.failures[:5]))
    told = timeline.told()[SETTLE:]
    return (len(told) - 1) / (told[-1] - told[0])


def run_ask_capacity(work: Path) -> dict[str, Any]:
    """Sustained trials per second that `SLOTS` slots get from the study, as the scheduler uses it: the real
    Scheduler and Step 2 source over a journal-file study (job files, journal syncs, archive, tell), with
    slots whose trials take no time, so the study is all that limits them. The study holds 1,000 (or 100)
    completed trials when the run begins, and `TRIALS` more are asked and told; the rate is taken over the
    trials told after the first `SETTLE` (the ask processes start meanwhile). `ask_processes`: as the
    coordinator runs (`ASK_PROCESSES` ask processes); `in_head`: every ask in the head's process (no ask
    processes), in the same run. Here the head and its ask processes share this machine's 2 cores with
    whatever else runs on it."""
    figures: dict[str, dict[str, Any]] = {}
    for existing in STUDY_SIZES:
        rates = {mode: [] for mode in (ASK_PROCESSES, 0)}
        for seed in range(REPEATS):
            for mode, done in rates.items():
                start = time.monotonic()
                done.append(capacity(work, existing, mode, seed))
                print(f"  {existing} trials, {mode} ask processes: {done[-1]:.0f}/s"
                      f" ({time.monotonic() - start:.0f} s)", flush=True)
        figures[existing] = figure(rates[ASK_PROCESSES], "trials/s", existing=existing, slots=SLOTS,
                                   ask_processes=ASK_PROCESSES, in_head=figure(rates[0], "trials/s"))
    return {"ask_capacity_per_s": {**figures[1000], "at_100": figures[100]}}
