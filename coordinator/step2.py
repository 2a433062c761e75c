"""`coordinator step2`: the Step 2 meta-optimisation, from inventory to optimal_scorer_config.json.

Wiring only: the policy is in scheduler.py, Optuna in study.py, the slot protocol in slots.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from coordinator import results
from coordinator.deploy import DeployError, deploy, worker_bundle
from coordinator.events import Event, Watcher
from coordinator.health import preflight
from coordinator.inventory import Rig, load_inventory
from coordinator.jobs import RunSettings, load_data_dir, new_run_id
from coordinator.scheduler import Outcome, Scheduler, Summary, Task
from coordinator.slots import ResultError, WarmSlot, fetch_result
from coordinator.study import STUDIES_DIR, Study, storage_path
from coordinator.transport import Transport, TransportError, connect
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
                 pending: list[Task], head_root: Path):
        self.study, self.settings, self.archive = study, settings, archive
        self.left, self.pending, self.head_root = new_trials, pending, head_root

    def next_task(self) -> Task | None:
        if self.pending:
            return self.pending.pop(0)
        if self.left <= 0:
            return None
        self.left -= 1
        number, params = self.study.ask()
        self.study.set_attrs(number, run_id=self.settings.run_id)
        return Task(contract.trial_id(number), data=(number, params))

    def build(self, task: Task, rig: Rig) -> Job:
        number, params = task.data
        job = self.settings.job(number, params, task.attempt)
        self.settings.write(job, self.head_root)
        self.study.set_attrs(number, dispatch={"rig": rig.name, "run_id": job.run_id, "attempt": task.attempt},
                             attempts=task.attempt)
        self.study.sync()  # the trial, its parameters and where it went, on disk before the job leaves
        return job

    def succeeded(self, task: Task, outcome: Outcome, rig: Rig) -> None:
        number, _ = task.data
        self.archive.store(outcome.record, final=True)  # runs/<study>/trials/trial_NNNN.json: derivable, not stored
        self.study.set_attrs(number, rig=rig.name, attempts=task.attempt, failures=task.failures)
        self.study.tell_value(number, float(outcome.value))

    def attempt_failed(self, task: Task, outcome: Outcome, rig: Rig | None, final: bool) -> None:
        number, params = task.data
        record = outcome.record or contract.make_result(
            self.settings.job(number, params, task.attempt).identity(), accuracy=None,
            error=f"{outcome.describe()} (on {rig.name if rig else 'no rig'}; recorded by the coordinator)")
        self.archive.store(record, final=final)
        if final:
            self.study.set_attrs(number, failures=task.failures, attempts=task.attempt)
            self.study.tell_fail(number, task.failure_text())


def _stage_data(settings_data: dict[str, Path], stage: Path) -> None:
    """Copy the run's data beside its archive: what the head validates and pushes, kept with the run."""
    stage.mkdir(parents=True, exist_ok=True)
    for path in settings_data.values():
        target = stage / path.name
        if not target.exists() or contract.sha256_file(target) != contract.sha256_file(path):
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)


def _validate_on_head(settings: RunSettings, root: Path, sources: dict[str, Path]) -> int:
    """Load the data exactly as a worker would, before any trial goes out: bad input stops here, with
    an error that names the operator's file, not the run's staged copy of it. Returns the pool size."""
    from worker.data import load_dataset

    staged = {str(contract.resolve_inside(root, ref.path)): sources[role] for role, ref in settings.data.items()}
    try:
        return len(load_dataset(settings.job(0, {}, 1), root).seeds)
    except contract.ContractError as exc:
        raise Step2Error(f"{staged.get(exc.source, exc.source)}: field '{exc.field}': {exc.problem}") from exc


def _open_rigs(rigs: list[Rig], files: dict[str, Path], out: TextIO) -> tuple[dict[str, Transport], dict[str, str]]:
    """Connect and deploy to every rig in parallel; a rig that fails is left out with its reason."""
    transports: dict[str, Transport] = {}
    excluded: dict[str, str] = {}
    lock = threading.Lock()

    def one(rig: Rig) -> None:
        transport = None
        try:
            transport = connect(rig)
            problem = preflight(transport)
            if problem:
                raise DeployError(f"pre-flight check failed: {problem}")
            report = deploy(transport, files)
            with lock:  # print under the lock too: print() from threads can splice lines together
                transports[rig.name] = transport
                print(f"deploy {rig.name}: {report}", file=out, flush=True)
        except Exception as exc:  # noqa: BLE001 - whatever goes wrong, this rig is left out with why
            if transport is not None:
                transport.close()
            with lock:
                excluded[rig.name] = str(exc)
                print(f"rig {rig.name} left out of the run: {exc}", file=out, flush=True)

    with ThreadPoolExecutor(max_workers=max(1, len(rigs))) as pool:
        list(pool.map(one, rigs))
    return transports, excluded


def _reattach(study: Study, transports: dict[str, Transport], archive: results.Archive, settings: RunSettings,
              out: TextIO) -> list[Task]:
    """Trials an earlier coordinator left RUNNING: collect the result if its rig has it, else re-run. The
    attempt it was running when it stopped is archived as failed, with why, so no attempt goes unrecorded."""
    pending = []
    for trial in study.trials():
        if trial.state != "RUNNING":
            continue
        params = study.complete_params(trial.number)
        dispatch = trial.attrs.get("dispatch") or {}
        record = _fetch_earlier(transports.get(dispatch.get("rig", "")), trial.number, dispatch)
        if record is not None and record["status"] == "success":
            archive.store(record, final=True)
            study.set_attrs(trial.number, rig=dispatch["rig"], reattached=True)
            study.tell_value(trial.number, float(record["accuracy"]))
            print(f"resume: {record['trial_id']} re-attached from {dispatch['rig']}: {record['accuracy']:.6f}",
                  file=out, flush=True)
            continue
        failures = []
        if "attempt" in dispatch:
            reason, detail = ("error", record["error"]) if record is not None else (
                "interrupted", f"the coordinator stopped during this attempt; no result on {dispatch['rig']}")
            if record is None:
                identity = {**settings.job(trial.number, params, dispatch["attempt"]).identity(),
                            "run_id": dispatch["run_id"]}
                record = contract.make_result(identity, accuracy=None,
                                              error=f"{reason}: {detail} (recorded by the coordinator on resume)")
            archive.store(record, final=False)
            failures.append({"attempt": dispatch["attempt"], "rig": dispatch["rig"], "reason": reason,
                             "detail": detail})
        attempt = max(trial.attrs.get("attempts", 0), dispatch.get("attempt", 0)) + 1  # never reuse one
        pending.append(Task(contract.trial_id(trial.number), attempt=attempt, data=(trial.number, params),
                            first_attempt=attempt, failures=failures))
        print(f"resume: {contract.trial_id(trial.number)} will be re-run", file=out, flush=True)
    return pending


def _fetch_earlier(transport: Transport | None, number: int, dispatch: dict[str, Any]) -> dict | None:
    if transport is None or "run_id" not in dispatch:
        return None
    try:
        return fetch_result(transport, dispatch["run_id"], contract.trial_id(number), dispatch["attempt"])
    except (TransportError, ResultError):
        return None


def run_step2(opts: Step2Options, watcher: Watcher, out: TextIO = sys.stdout) -> Step2Result:
    started = time.time()
    rigs = load_inventory(opts.rigs)
    code = contract.code_hash()
    if opts.resume:
        name = opts.resume
        study = Study(name, storage_path(name, opts.studies_dir), seed=opts.seed, create=False)
        meta = study.meta()
        if meta.get("code_hash") != code:
            print(f"note: the worker code changed since this study began ({str(meta.get('code_hash'))[:12]} ->"
                  f" {code[:12]}); remaining trials run the current code", file=out)
    else:
        if opts.data is None:
            raise Step2Error("--data is required for a new study")
        name = opts.study or f"scorer_meta_opt_{int(started)}"
        dataset = load_data_dir(opts.data, opts.prng, opts.mod)
        refs = dataset.refs
        meta = {"code_hash": code, "worker_version": VERSION, "prng": {"type": dataset.prng_type, "mod": dataset.mod},
                "sample_size": opts.sample_size, "timeout_s": opts.timeout_s, "trials": opts.trials,
                "seed": opts.seed, "data": {role: {"path": ref.path, "sha256": ref.sha256,
                                                   "source": str(dataset.files[role].resolve())}
                                            for role, ref in refs.items()}}
    run_dir = opts.runs_dir / name
    sources = {role: Path(d["source"]) for role, d in meta["data"].items()}
    for role, d in meta["data"].items():
        if not sources[role].is_file() or contract.sha256_file(sources[role]) != d["sha256"]:
            raise Step2Error(f"{sources[role]}: the study's {role} file is missing or changed since the study began")
    _stage_data(sources, run_dir / "data")
    settings = RunSettings(study=name, run_id=new_run_id(), code_hash=code, prng_type=meta["prng"]["type"],
                           mod=meta["prng"]["mod"], sample_size=meta["sample_size"], timeout_s=meta["timeout_s"],
                           data={role: DataRef(d["path"], d["sha256"]) for role, d in meta["data"].items()})
    pool = _validate_on_head(settings, run_dir, sources)
    if not opts.resume:
        study = Study(name, storage_path(name, opts.studies_dir), seed=opts.seed, create=True)
        for key, value in meta.items():
            study.set_meta(key, value)
    study.set_meta("runs", [*study.meta().get("runs", []), settings.run_id])
    print(f"study {name}: storage {study.path}, run {settings.run_id}", file=out, flush=True)

    files = {**worker_bundle(), **{ref.path: run_dir / "data" / Path(ref.path).name
                                  for ref in settings.data.values()}}
    transports, excluded = _open_rigs(rigs, files, out)
    if not transports:
        raise Step2Error("no rig is usable: " + "; ".join(f"{k}: {v}" for k, v in excluded.items()))
    archive = results.Archive(name, opts.runs_dir)
    pending = _reattach(study, transports, archive, settings, out) if opts.resume else []
    finished = sum(t.state in ("COMPLETE", "FAIL") for t in study.trials())
    target = meta["trials"] if opts.resume else opts.trials
    new_trials = max(0, target - finished - len(pending))
    source = Step2Source(study, settings, archive, new_trials, pending, Path("."))
    watcher.notify(Event("planned", value=new_trials + len(pending)))
    executors = [WarmSlot(transports[rig.name], i, lambda task, r=rig: source.build(task, r), code)
                 for rig in rigs if rig.name in transports for i in range(rig.slots)]
    scheduler = Scheduler(source, executors, watcher, max_attempts=opts.max_attempts,
                          quarantine_after=opts.quarantine_after)
    try:
        summary = scheduler.run()
    finally:
        for transport in transports.values():
            transport.close()
    config = None
    if study.best() is not None:
        config = results.write_optimal_config(opts.output, study, archive, pool, started)
    return Step2Result(name, study.path, settings.run_id, summary, config, opts.output, archive.dir, excluded)
