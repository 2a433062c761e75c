"""A warm slot: one (rig, GPU) with a long-lived `python -m worker serve` behind it.

Per attempt: push the job file, send one line, wait for one line, validate the result file (sent in
that line, or fetched). Everything that can go wrong comes back as an Outcome with a one-word
reason; a worker that died or hung is killed (its whole process group) and restarted lazily before
the next attempt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from coordinator.scheduler import Outcome, Task
from coordinator.transport import Process, Transport, TransportError
from worker import contract
from worker.contract import Job

READY_TIMEOUT_S = 180.0  # a cold torch import on a busy rig
FETCH_GRACE_S = 30.0  # beyond the job's own limit, for the server's answer to arrive


class SlotError(RuntimeError):
    pass


def serve_command(transport: Transport, index: int) -> tuple[list[str], dict[str, str]]:
    rig = transport.rig
    return [rig.python, "-m", "worker", "serve", "--root", "."], {**rig.slot_env(index), "PYTHONPATH": "code"}


class ResultError(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def fetch_result(transport: Transport, run_id: str, tid: str, attempt: int, sent: str | None = None) -> dict:
    """An attempt's result file from its rig (or its text as the worker `sent` it in its "done" line),
    validated against the run, trial and attempt.
    Raises TransportError (reason 'missing' when absent) or ResultError ('corrupt' or 'invalid')."""
    path = contract.result_path(run_id, tid, attempt)
    where = f"{transport.rig.name}:{path}"
    raw = transport.get_bytes(path) if sent is None else sent
    try:
        return contract.validate_result(json.loads(raw), where, run_id=run_id, tid=tid, attempt=attempt)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError("corrupt", f"{where}: not valid JSON: {exc}") from exc
    except contract.ContractError as exc:
        raise ResultError("invalid", str(exc)) from exc


class WarmSlot:
    def __init__(self, transport: Transport, index: int, build: Callable[[Task], Job], code_hash: str):
        self.transport, self.rig, self.index = transport, transport.rig, index
        self.build, self.code_hash = build, code_hash
        self.proc: Process | None = None
        self.lock = threading.Lock()
        self.cancelled = False

    def start(self) -> None:
        argv, env = serve_command(self.transport, self.index)
        proc = self.transport.start(argv, env)
        try:
            ready = self._read_event(proc, READY_TIMEOUT_S)
        except (SlotError, TransportError):
            proc.kill()
            raise
        if ready.get("event") != "ready":
            proc.kill()
            raise SlotError(f"worker did not start: {ready}")
        if ready.get("code_hash") != self.code_hash:
            proc.kill()
            raise SlotError(f"stale worker code on the rig: {str(ready.get('code_hash'))[:12]} is not the head's"
                            f" {self.code_hash[:12]}")
        with self.lock:
            self.proc, self.cancelled = proc, False

    def _read_event(self, proc: Process, timeout: float) -> dict:
        line = proc.read_line(timeout)
        if line is None:
            raise SlotError(f"no answer from the worker within {timeout:.0f} s")
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SlotError(f"unreadable answer from the worker: {line[:200]!r}") from exc
        if not isinstance(event, dict):
            raise SlotError(f"unreadable answer from the worker: {line[:200]!r}")
        return event

    def execute(self, task: Task) -> Outcome:
        if self.proc is not None and self.proc.wait(0) is not None:
            self._drop(self.proc)  # it died since its last attempt (a dropped connection): restart it, fail no trial
        if self.proc is None:
            try:
                self.start()
            except (SlotError, TransportError) as exc:
                return Outcome(False, reason="lost", detail=f"worker restart failed: {exc}")
        job = self.build(task)
        proc = self.proc
        assert proc is not None
        log = f"logs/{job.run_id}/{job.trial_id}.a{job.attempt}.log"
        try:
            self.transport.put_bytes(json.dumps(job.to_dict(), indent=1).encode(),
                                     contract.job_path(job.study, job.trial_id))
            proc.send_line(json.dumps({"job": contract.job_path(job.study, job.trial_id),
                                       "timeout_s": job.timeout_s, "log": log}))
            done = self._read_event(proc, job.timeout_s + FETCH_GRACE_S)
        except (SlotError, TransportError) as exc:
            self._drop(proc)
            reason = "cancelled" if self.cancelled else (
                "timeout" if isinstance(exc, SlotError) else getattr(exc, "reason", "lost"))
            return Outcome(False, reason=reason, detail=str(exc))
        if done.get("event") != "done":
            return Outcome(False, reason="protocol", detail=str(done.get("error", done))[:300])
        if done.get("timed_out"):
            return Outcome(False, reason="timeout", detail=f"over the {job.timeout_s:g} s limit; killed on the rig")
        sent = done.get("result")
        return self._collect(job, int(done.get("exit", -1)), done.get("error"), sent if isinstance(sent, str) else None)

    def _collect(self, job: Job, exit_status: int, error: str | None = None, sent: str | None = None) -> Outcome:
        """Validate the attempt's result file, as sent in the "done" line or else fetched; only a valid
        success is a success. `error`: why the worker died, when it could not write a result to say so."""
        try:
            record = fetch_result(self.transport, job.run_id, job.trial_id, job.attempt, sent)
        except TransportError as exc:
            if exc.reason == "missing":
                why = f": {error}" if error else ""
                return Outcome(False, reason="missing",
                               detail=f"no result file {job.result_path} (worker exit {exit_status}{why})")
            return Outcome(False, reason=exc.reason, detail=str(exc))
        except ResultError as exc:
            return Outcome(False, reason=exc.reason, detail=str(exc))
        if record["status"] != "success":
            return Outcome(False, reason="error", detail=record["error"], record=record)
        if exit_status != 0:
            return Outcome(False, reason="exit", detail=f"worker exit {exit_status} beside a success record",
                           record=record)
        return Outcome(True, value=float(record["accuracy"]), record=record)

    def _drop(self, proc: Process) -> None:
        proc.kill()
        with self.lock:
            if self.proc is proc:
                self.proc = None

    def cancel(self) -> None:
        with self.lock:
            proc, self.cancelled = self.proc, True
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
