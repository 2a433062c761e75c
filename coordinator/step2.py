"""`coordinator step2`: the Step 2 meta-optimisation, from inventory to optimal_scorer_config.json.

Wiring and the Source: the checks before anything is created are in options.py, the policy in
scheduler.py, Optuna in study.py, the slot protocol in slots.py, the data in dataset.py, opening rigs in
rigs.py, resume in resume.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from coordinator import dataset, results
from coordinator.chance import Verdict, verdict
from coordinator.confirm import ConfirmSource, Optimum, optimum
from coordinator.deploy import worker_bundle
from coordinator.events import Event, EventKind, Watcher
from coordinator.inventory import Rig
from coordinator.options import Plan, Step2Options, plan_run
from coordinator.outcome import Outcome
from coordinator.report import generator_ranks, pool_seeds
from coordinator.resume import reattach
from coordinator.rig_server import RigServer
from coordinator.rigs import OpenRigs, open_rigs
from coordinator.scheduler import Phases, Scheduler, Summary, Task
from coordinator.settings import RunSettings, TrialSpec
from coordinator.slots import WarmSlot
from coordinator.study import Study, TrialState
from worker import contract
from worker.contract import Job
from worker.objective import OBJECTIVES


class Step2Error(RuntimeError):
    pass


class Interrupted(Step2Error):
    """A stop was asked for before any trial was dispatched."""


@dataclass
class Step2Result:
    study: str
    storage: Path
    run_id: str
    summary: Summary
    config: dict[str, Any] | None  # None: not written (no trial completed, or the study is unfinished)
    output: Path
    previous: Path | None  # where the optimal configuration that was at `output` was kept
    trials_dir: Path
    excluded: dict[str, str]
    finished: int  # trials the study holds finished (complete or failed), after this run
    target: int  # trials the study is to hold
    optimum: Optimum | None  # the best confirmed trial (None: not confirmed, or no confirmation asked for)
    verdicts: dict[str, Verdict]  # per figure: the study's best against chance for the best of N
    objective: str  # the figure the study optimises
    generators: list[dict[str, Any]] | None  # synthetic data: where each generating seed ranked


def figures_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure's value, standard error and chance level from a result: what the study keeps of it."""
    return {name: {k: f[k] for k in ("value", "se", "null_mean", "null_sd", "p_value", "p_normal")}
            for name, f in record["diagnostics"]["figures"].items()}


class Step2Source:
    """Tasks from Optuna (and trials an earlier coordinator left unfinished); outcomes back to it."""

    def __init__(self, study: Study, settings: RunSettings, archive: results.Archive, new_trials: int,
                 pending: list[Task[TrialSpec]], head_root: Path):
        self.study, self.settings, self.archive = study, settings, archive
        self.left, self.pending, self.head_root = new_trials, pending, head_root

    def next_task(self) -> Task[TrialSpec] | None:
        if self.pending:
            return self.pending.pop(0)
        if self.left <= 0:
            return None
        self.left -= 1
        number, params = self.study.ask(run_id=self.settings.run_id)
        return Task(contract.trial_id(number), TrialSpec(number, params))

    def build(self, task: Task[TrialSpec], rig: Rig) -> Job:
        job = self.settings.job(task.payload.number, task.payload.params, task.attempt)
        self.settings.write(job, self.head_root)
        self.study.set_attrs(task.payload.number, attempts=task.attempt,
                             dispatch={"rig": rig.name, "run_id": job.run_id, "attempt": task.attempt})
        self.study.sync()  # the trial, its parameters and where it went, on disk before the job leaves
        return job

    def succeeded(self, task: Task[TrialSpec], outcome: Outcome, rig: Rig) -> None:
        self.archive.store(outcome.record, final=True)  # runs/<study>/trials/trial_NNNN.json: derivable, not stored
        self.study.set_attrs(task.payload.number, rig=rig.name, attempts=task.attempt,
                             failures=[f.to_dict() for f in task.failures], figures=figures_of(outcome.record))
        self.study.tell_value(task.payload.number, float(outcome.value))

    def attempt_failed(self, task: Task[TrialSpec], outcome: Outcome, rig: Rig | None, final: bool) -> None:
        spec = task.payload
        record = outcome.record or contract.make_result(
            self.settings.job(spec.number, spec.params, task.attempt).identity(), accuracy=None,
            error=f"{outcome.describe()} (on {rig.name if rig else 'no rig'}; recorded by the coordinator)")
        self.archive.store(record, final=final)
        # every failure on record at once: a trial the run leaves unfinished keeps them for its resume
        self.study.set_attrs(spec.number, failures=[f.to_dict() for f in task.failures], attempts=task.attempt)
        if final:
            self.study.tell_fail(spec.number, task.failure_text())


def run_step2(opts: Step2Options, watcher: Watcher, out: TextIO = sys.stdout,
              stop_requested: Callable[[], str | None] = lambda: None) -> Step2Result:
    """Check everything, open the rigs, then create (or reopen) the study and run its trials. Nothing is
    created before every check that needs no rig has passed, and no study before the rigs opened.
    `stop_requested` says why to stop (a signal), or None; a stop before dispatch raises Interrupted."""
    started = time.time()
    code = contract.code_hash()
    plan = plan_run(opts, code, started)
    for note in plan.notes:
        print(f"note: {note}", file=out, flush=True)
    study = Study(plan.name, plan.storage, seed=plan.meta["seed"], create=False) if plan.resume else None
    _check_stop(stop_requested)
    opened = open_rigs(plan.rigs, {**worker_bundle(), **_data_files(plan)}, out)
    try:
        opened.check_usable(opts.require_all_rigs)
        _check_stop(stop_requested)
        study = study or Study(plan.name, plan.storage, seed=plan.meta["seed"], create=True)
        for key, value in {**plan.record, "runs": [*study.meta().get("runs", []), plan.settings.run_id]}.items():
            study.set_meta(key, value)
        dataset.stage(plan.sources, opts.runs_dir / plan.name / "data")
        print(f"study {plan.name}: storage {study.path}, run {plan.settings.run_id}", file=out, flush=True)
        archive = results.Archive(plan.name, opts.runs_dir)
        pending = reattach(study, opened.transports, archive, plan.settings, out) if plan.resume else []
        search = Step2Source(study, plan.settings, archive, _trials_left(study, plan.meta["trials"], pending),
                             pending, Path("."))
        confirm = ConfirmSource(study, plan.settings, archive, plan.confirm_top, plan.confirm, opened.transports,
                                watcher, out)
        summary = _schedule(Phases(search, confirm), search.left + len(pending), plan.rigs, opened, watcher, opts,
                            plan.settings, stop_requested)
    finally:
        opened.close()
        if study is not None:
            study.close()  # its ask processes (the study reads on)
    finished = _finished(study)
    config, previous, found = None, None, optimum(study, plan.confirm_top) if plan.confirm_top else None
    done = study.best() and not summary.stopped and not summary.unfinished and finished >= plan.meta["trials"]
    if done and (found or not plan.confirm_top):
        previous = results.keep_previous(opts.output)
        config = results.write_optimal_config(opts.output, study, archive, plan.pool, started, plan.confirm_top,
                                              found)
    verdicts = {name: verdict(study.trials(), name) for name in OBJECTIVES}
    meta = study.meta()
    seeds = pool_seeds(opts.runs_dir / plan.name, meta)
    generators = None if seeds is None else generator_ranks(study, meta, archive, seeds)
    return Step2Result(plan.name, study.path, plan.settings.run_id, summary, config, opts.output, previous,
                       archive.dir, opened.excluded, finished, plan.meta["trials"], found, verdicts,
                       plan.meta["evaluation"]["objective"], generators)


def _check_stop(stop_requested: Callable[[], str | None]) -> None:
    why = stop_requested()
    if why is not None:
        raise Interrupted(f"{why} before any trial was dispatched")


def _data_files(plan: Plan) -> dict[str, Path]:
    """The study's data as deploy() wants it: workdir path -> the operator's file."""
    return {ref.path: plan.sources[role] for role, ref in plan.settings.data.items()}


def _finished(study: Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in study.trials())


def _trials_left(study: Study, target: int, pending: list[Task[TrialSpec]]) -> int:
    return max(0, target - _finished(study) - len(pending))


def _schedule(source: Phases, planned: int, rigs: list[Rig], opened: OpenRigs, watcher: Watcher,
              opts: Step2Options, settings: RunSettings, stop_requested: Callable[[], str | None]) -> Summary:
    """One warm slot per (rig, slot) of the rigs that opened, forked from one server per rig (which parses
    the run's data once), under the scheduler's policy; each phase's source builds its own jobs."""
    watcher.notify(Event(EventKind.PLANNED, value=planned))
    servers = {name: RigServer(transport, settings.code_hash, settings.data)
               for name, transport in opened.transports.items()}
    slots = [WarmSlot(servers[rig.name], i, lambda task, r=rig: source.source.build(task, r))
             for rig in rigs if rig.name in servers for i in range(rig.slots)]
    try:
        return Scheduler(source, slots, watcher, max_attempts=opts.max_attempts,
                         quarantine_after=opts.quarantine_after, stop_requested=stop_requested).run()
    finally:
        for server in servers.values():
            server.close()
