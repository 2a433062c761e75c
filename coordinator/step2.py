"""`coordinator step2`: the Step 2 meta-optimisation, from inventory to optimal_scorer_config.json.

Wiring and the Source: the policy is in scheduler.py, Optuna in study.py, the slot protocol in
slots.py, the data in dataset.py, opening rigs in rigs.py, resume in resume.py.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from coordinator import dataset, results
from coordinator.deploy import worker_bundle
from coordinator.events import Event, EventKind, Watcher
from coordinator.inventory import Rig, load_inventory
from coordinator.outcome import Outcome
from coordinator.resume import reattach
from coordinator.rig_server import RigServer
from coordinator.rigs import OpenRigs, open_rigs
from coordinator.scheduler import Scheduler, Summary, Task
from coordinator.settings import RunSettings, TrialSpec, new_run_id
from coordinator.slots import WarmSlot
from coordinator.study import STUDIES_DIR, Study, TrialState, storage_path
from worker import VERSION, contract
from worker.contract import DataRef, Job


class Step2Error(RuntimeError):
    pass


@dataclass(frozen=True)
class Step2Options:
    rigs: Path
    data: Path | None = None
    trials: int = 100
    sample_size: int = 450
    seed: int = 0
    timeout_s: float = 600.0
    max_attempts: int = 2
    quarantine_after: int = 3
    prng: str | None = None
    mod: int | None = None
    resume: str | None = None
    study: str | None = None
    output: Path = Path("optimal_scorer_config.json")
    studies_dir: Path = STUDIES_DIR
    runs_dir: Path = results.RUNS_DIR


@dataclass
class Step2Result:
    study: str
    storage: Path
    run_id: str
    summary: Summary
    config: dict[str, Any] | None
    output: Path
    trials_dir: Path
    excluded: dict[str, str]


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
        number, params = self.study.ask()
        self.study.set_attrs(number, run_id=self.settings.run_id)
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
                             failures=[f.to_dict() for f in task.failures])
        self.study.tell_value(task.payload.number, float(outcome.value))

    def attempt_failed(self, task: Task[TrialSpec], outcome: Outcome, rig: Rig | None, final: bool) -> None:
        spec = task.payload
        record = outcome.record or contract.make_result(
            self.settings.job(spec.number, spec.params, task.attempt).identity(), accuracy=None,
            error=f"{outcome.describe()} (on {rig.name if rig else 'no rig'}; recorded by the coordinator)")
        self.archive.store(record, final=final)
        if final:
            self.study.set_attrs(spec.number, failures=[f.to_dict() for f in task.failures], attempts=task.attempt)
            self.study.tell_fail(spec.number, task.failure_text())


def run_step2(opts: Step2Options, watcher: Watcher, out: TextIO = sys.stdout) -> Step2Result:
    started = time.time()
    rigs = load_inventory(opts.rigs)
    code = contract.code_hash()
    study, name, meta = _open_resumed(opts, code, out) if opts.resume else (None, *_new_meta(opts, code, started))
    settings = RunSettings(study=name, run_id=new_run_id(), code_hash=code, prng_type=meta["prng"]["type"],
                           mod=meta["prng"]["mod"], sample_size=meta["sample_size"], timeout_s=meta["timeout_s"],
                           data={role: DataRef(d["path"], d["sha256"]) for role, d in meta["data"].items()})
    run_dir = opts.runs_dir / name
    pool = _stage_and_validate(settings, meta, run_dir)
    study = study or _create_study(name, meta, opts)
    study.set_meta("runs", [*study.meta().get("runs", []), settings.run_id])
    print(f"study {name}: storage {study.path}, run {settings.run_id}", file=out, flush=True)
    opened = open_rigs(rigs, {**worker_bundle(), **_data_files(settings, run_dir)}, out)
    if not opened.transports:
        raise Step2Error("no rig is usable: " + "; ".join(f"{k}: {v}" for k, v in opened.excluded.items()))
    archive = results.Archive(name, opts.runs_dir)
    try:
        pending = reattach(study, opened.transports, archive, settings, out) if opts.resume else []
        target = meta["trials"] if opts.resume else opts.trials
        source = Step2Source(study, settings, archive, _trials_left(study, target, pending), pending, Path("."))
        summary = _schedule(source, rigs, opened, watcher, opts, code, len(pending))
    finally:
        opened.close()
    config = results.write_optimal_config(opts.output, study, archive, pool, started) if study.best() else None
    return Step2Result(name, study.path, settings.run_id, summary, config, opts.output, archive.dir, opened.excluded)


def _open_resumed(opts: Step2Options, code: str, out: TextIO) -> tuple[Study, str, dict[str, Any]]:
    """The study to resume, its name and the settings it was started with."""
    assert opts.resume is not None
    study = Study(opts.resume, storage_path(opts.resume, opts.studies_dir), seed=opts.seed, create=False)
    meta = study.meta()
    if meta.get("code_hash") != code:
        print(f"note: the worker code changed since this study began ({str(meta.get('code_hash'))[:12]} ->"
              f" {code[:12]}); remaining trials run the current code", file=out)
    return study, opts.resume, meta


def _new_meta(opts: Step2Options, code: str, started: float) -> tuple[str, dict[str, Any]]:
    """A new study's name and the settings it records, so that a resume needs no arguments."""
    if opts.data is None:
        raise Step2Error("--data is required for a new study")
    data = dataset.load_data_dir(opts.data, opts.prng, opts.mod)
    return opts.study or f"scorer_meta_opt_{int(started)}", {
        "code_hash": code, "worker_version": VERSION, "prng": {"type": data.prng_type, "mod": data.mod},
        "sample_size": opts.sample_size, "timeout_s": opts.timeout_s, "trials": opts.trials, "seed": opts.seed,
        "data": {role: {"path": ref.path, "sha256": ref.sha256, "source": str(data.files[role].resolve())}
                 for role, ref in data.refs.items()}}


def _stage_and_validate(settings: RunSettings, meta: dict[str, Any], run_dir: Path) -> int:
    """The study's files checked, copied under runs/<study>/data/ and loaded as a worker will load them;
    returns the survivor pool's size."""
    sources = {role: Path(d["source"]) for role, d in meta["data"].items()}
    dataset.check_sources(sources, {role: d["sha256"] for role, d in meta["data"].items()})
    dataset.stage(sources, run_dir / "data")
    return dataset.validate_on_head(settings.job(0, {}, 1).payload, run_dir, sources)


def _create_study(name: str, meta: dict[str, Any], opts: Step2Options) -> Study:
    study = Study(name, storage_path(name, opts.studies_dir), seed=opts.seed, create=True)
    for key, value in meta.items():
        study.set_meta(key, value)
    return study


def _data_files(settings: RunSettings, run_dir: Path) -> dict[str, Path]:
    """The staged data as deploy() wants it: workdir path -> file on the head."""
    return {ref.path: run_dir / "data" / Path(ref.path).name for ref in settings.data.values()}


def _trials_left(study: Study, target: int, pending: list[Task[TrialSpec]]) -> int:
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in study.trials())
    return max(0, target - finished - len(pending))


def _schedule(source: Step2Source, rigs: list[Rig], opened: OpenRigs, watcher: Watcher, opts: Step2Options,
              code: str, pending: int) -> Summary:
    """One warm slot per (rig, slot) of the rigs that opened, forked from one server per rig, under the
    scheduler's policy."""
    watcher.notify(Event(EventKind.PLANNED, value=source.left + pending))
    servers = {name: RigServer(transport, code, source.settings.data) for name, transport in opened.transports.items()}
    slots = [WarmSlot(servers[rig.name], i, lambda task, r=rig: source.build(task, r))
             for rig in rigs if rig.name in servers for i in range(rig.slots)]
    try:
        return Scheduler(source, slots, watcher, max_attempts=opts.max_attempts,
                         quarantine_after=opts.quarantine_after).run()
    finally:
        for server in servers.values():
            server.close()
