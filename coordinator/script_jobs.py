"""`coordinator run --jobs-file`: script jobs in the old coordinator's format over the same rig opening,
slots, retries and checks. A job succeeds only if its process exits 0 AND its expected output is valid
JSON that does not report an error; the output is then fetched into the run's archive.

Jobs file: a JSON list (or {"jobs": [...]}) of {job_id, script, args, expected_output, timeout}.
`script` and `expected_output` are paths inside the rig's workdir; arguments are passed as argv,
never through a shell.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from coordinator.deploy import worker_bundle
from coordinator.events import Event, EventKind, Watcher
from coordinator.inventory import Rig, load_inventory
from coordinator.outcome import Outcome, Reason
from coordinator.rigs import open_rigs
from coordinator.scheduler import Scheduler, Summary, Task
from coordinator.transport import Transport, TransportError
from worker import contract
from worker.files import write_json_atomic


@dataclass(frozen=True)
class ScriptJob:
    job_id: str
    script: str
    args: tuple[str, ...]
    expected_output: str
    timeout_s: float


def load_jobs_file(path: Path) -> list[ScriptJob]:
    raw = contract.read_json(path)
    items = raw.get("jobs") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise contract.ContractError(path, "jobs", "must be a non-empty list of job objects")
    jobs, seen = [], set()
    for i, item in enumerate(items):
        where = f"jobs[{i}]"
        if not isinstance(item, dict):
            raise contract.ContractError(path, where, "must be an object")
        unknown = set(item) - {"job_id", "script", "args", "expected_output", "timeout"}
        if unknown:
            raise contract.ContractError(path, f"{where}.{sorted(unknown)[0]}", "unknown field")
        job_id = contract.safe_relpath(path, f"{where}.job_id", item.get("job_id"))
        if "/" in job_id or job_id in seen:
            raise contract.ContractError(path, f"{where}.job_id", f"{job_id!r} must be a unique plain name")
        seen.add(job_id)
        args = item.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str | int | float) and not isinstance(a, bool)
                                                 for a in args):
            raise contract.ContractError(path, f"{where}.args", "must be a list of strings or numbers")
        timeout = item.get("timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
                math.isfinite(timeout) and timeout > 0):
            raise contract.ContractError(path, f"{where}.timeout", "must be a positive number of seconds")
        jobs.append(ScriptJob(job_id, contract.safe_relpath(path, f"{where}.script", item.get("script")),
                              tuple(str(a) for a in args),
                              contract.safe_relpath(path, f"{where}.expected_output", item.get("expected_output")),
                              float(timeout)))
    return jobs


def check_output(raw: bytes, where: str) -> dict[str, Any] | list[Any]:
    """Valid output: JSON, and not a record of failure (status error, a non-finite accuracy)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        if str(data.get("status", "")).lower() in ("error", "failed", "failure"):
            raise ValueError(f"{where}: reports status {data['status']!r}: {data.get('error', '')}")
        acc = data.get("accuracy")
        if isinstance(acc, float) and not math.isfinite(acc):
            raise ValueError(f"{where}: accuracy {acc} is not a value")
    return data


class ScriptSlot:
    """One slot running script jobs: a fresh process per job, in its own group, under a hard limit."""

    def __init__(self, transport: Transport, index: int):
        self.transport, self.rig, self.index = transport, transport.rig, index

    def start(self) -> None:
        pass

    def execute(self, task: Task[ScriptJob]) -> Outcome:
        job = task.payload
        argv = [self.rig.python, job.script, *job.args]
        try:
            done = self.transport.run(argv, timeout=job.timeout_s, env=self.rig.slot_env(self.index))
        except TransportError as exc:
            return Outcome(False, reason=exc.reason, detail=exc.detail)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            return Outcome(False, reason=Reason.EXIT, detail=f"exit {done.returncode}: {tail[0][:300]}")
        try:
            raw = self.transport.get_bytes(job.expected_output)
            data = check_output(raw, f"{self.rig.name}:{job.expected_output}")
        except TransportError as exc:
            return Outcome(False, reason=exc.reason, detail=f"{job.expected_output}: {exc.detail}")
        except ValueError as exc:
            return Outcome(False, reason=Reason.INVALID, detail=str(exc))
        return Outcome(True, record={"job_id": job.job_id, "output": data})

    def cancel(self) -> None:
        """A script job cannot be interrupted from here; its own hard time limit ends it."""

    def close(self) -> None:
        pass


class JobsSource:
    def __init__(self, jobs: list[ScriptJob], out_dir: Path):
        self.queue, self.out_dir = list(jobs), out_dir
        self.outcomes: dict[str, dict[str, Any]] = {}

    def next_task(self) -> Task[ScriptJob] | None:
        return Task(self.queue[0].job_id, self.queue.pop(0)) if self.queue else None

    def succeeded(self, task: Task[ScriptJob], outcome: Outcome, rig: Rig) -> None:
        write_json_atomic(self.out_dir / "outputs" / f"{task.key}.json", outcome.record["output"])
        self.outcomes[task.key] = {"status": "success", "rig": rig.name, "attempts": task.attempt,
                                   "failures": [f.to_dict() for f in task.failures]}

    def attempt_failed(self, task: Task[ScriptJob], outcome: Outcome, rig: Rig | None, final: bool) -> None:
        if final:
            self.outcomes[task.key] = {"status": "failed", "attempts": task.attempt,
                                       "failures": [f.to_dict() for f in task.failures]}


def run_jobs(rigs_file: Path, jobs_file: Path, out_dir: Path, watcher: Watcher, *, max_attempts: int = 2,
             quarantine_after: int = 3, require_all_rigs: bool = False, out: TextIO = sys.stdout,
             stop_requested: Callable[[], str | None] = lambda: None,
             ) -> tuple[Summary, dict[str, dict[str, Any]], dict[str, str]]:
    """Run the jobs; their summary, each job's outcome, and the rigs left out at the start with why."""
    jobs = load_jobs_file(jobs_file)
    rigs = load_inventory(rigs_file)
    opened = open_rigs(rigs, worker_bundle(), out)
    opened.check_usable(require_all_rigs)
    source = JobsSource(jobs, out_dir)
    watcher.notify(Event(EventKind.PLANNED, value=len(jobs)))
    slots = [ScriptSlot(opened.transports[r.name], i) for r in rigs if r.name in opened.transports
             for i in range(r.slots)]
    started = time.time()
    try:
        summary = Scheduler(source, slots, watcher, max_attempts=max_attempts, quarantine_after=quarantine_after,
                            stop_requested=stop_requested).run()
    finally:
        opened.close()
    write_json_atomic(out_dir / "summary.json", {
        "jobs_file": str(jobs_file), "seconds": round(time.time() - started, 3), "complete": summary.complete,
        "failed": summary.failed, "retried": summary.retried, "unfinished": summary.unfinished,
        "stopped": summary.stopped, "rigs_out": {**opened.excluded, **summary.rigs_out}, "jobs": source.outcomes})
    return summary, source.outcomes, opened.excluded
