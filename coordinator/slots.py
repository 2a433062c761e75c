"""A warm slot: one (rig, GPU) with a long-lived slot server behind it, forked from the rig's server
(coordinator.rig_server).

Per attempt: send one request carrying the job file, wait for one "done", validate the result (its text
sent in that line, or fetched) as the job's kind says. Everything that can go wrong comes back as an
Outcome with a one-word reason; a slot server that died or hung is killed (its whole process group) and
a new one is forked lazily before the next attempt (the rig's server, and with it its imports, only
when it died too). The slot knows no kind of job: the Source builds each one, and the job says where
its result is and what a valid one holds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from coordinator.outcome import Outcome, Reason
from coordinator.rig_server import READY_TIMEOUT_S, RigServer, ServerError, SlotProcess
from coordinator.scheduler import Task
from coordinator.transport import Transport, TransportError
from worker import contract, protocol
from worker.contract import Job
from worker.protocol import Done, Ready, RunRequest

FETCH_GRACE_S = 30.0  # beyond the job's own limit, for the server's answer to arrive


class ResultError(ValueError):
    def __init__(self, reason: Reason, detail: str):
        super().__init__(detail)
        self.reason = reason


def fetch_result(transport: Transport, job: Job, sent: str | None = None) -> dict:
    """A job's result file from its rig (or its text as the worker `sent` it in its "done" line),
    validated against the job. Raises TransportError (reason 'missing' when absent) or ResultError
    ('corrupt' or 'invalid')."""
    where = f"{transport.rig.name}:{job.result_path}"
    raw = transport.get_bytes(job.result_path) if sent is None else sent
    try:
        return contract.validate_result(json.loads(raw), where, job)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(Reason.CORRUPT, f"{where}: not valid JSON: {exc}") from exc
    except contract.ContractError as exc:
        raise ResultError(Reason.INVALID, str(exc)) from exc


class WarmSlot:
    def __init__(self, server: RigServer, index: int, build: Callable[[Task], Job]):
        self.server, self.transport, self.rig, self.index = server, server.transport, server.rig, index
        self.build = build
        self.proc: SlotProcess | None = None
        self.lock = threading.Lock()
        self.cancelled = False

    def start(self) -> None:
        proc = self.server.open(self.index)
        try:
            ready = self._read_event(proc, READY_TIMEOUT_S)
        except (ServerError, TransportError):
            proc.kill()
            raise
        if not isinstance(ready, Ready):
            proc.kill()
            raise ServerError(f"slot server did not start: {ready}")
        with self.lock:
            self.proc, self.cancelled = proc, False

    def _read_event(self, proc: SlotProcess, timeout: float) -> protocol.Event:
        event = proc.read(timeout)
        if event is None:
            raise ServerError(f"no answer from the worker within {timeout:.0f} s")
        return event

    def execute(self, task: Task) -> Outcome:
        if self.proc is not None and self.proc.wait(0) is not None:
            self._drop(self.proc)  # it died since its last attempt (a dropped connection): restart it, fail no trial
        if self.proc is None:
            try:
                self.start()
            except (ServerError, TransportError) as exc:
                return Outcome(False, reason=Reason.LOST,
                               detail=f"worker restart failed: {getattr(exc, 'detail', exc)}")
        job = self.build(task)
        proc = self.proc
        assert proc is not None
        try:
            proc = self._send(proc, RunRequest(job.path, job.timeout_s, job.log_path,
                                               json.dumps(job.to_dict(), indent=1)))
            done = self._read_event(proc, job.timeout_s + FETCH_GRACE_S)
        except (ServerError, TransportError) as exc:
            self._drop(proc)
            reason = Reason.CANCELLED if self.cancelled else (
                Reason.TIMEOUT if isinstance(exc, ServerError) else getattr(exc, "reason", Reason.LOST))
            return Outcome(False, reason=reason, detail=str(getattr(exc, "detail", exc)))  # the reason once
        if not isinstance(done, Done):
            detail = done.error if isinstance(done, protocol.BadRequest) else str(done)
            return Outcome(False, reason=Reason.PROTOCOL, detail=detail[:300])
        if done.timed_out:
            return Outcome(False, reason=Reason.TIMEOUT,
                           detail=f"over the {job.timeout_s:g} s limit; killed on the rig")
        return self._collect(job, done)

    def _send(self, proc: SlotProcess, request: RunRequest) -> SlotProcess:
        """Send the attempt's request; the slot server that got it. One whose channel turns out dead (the
        rig's connection dropped after its last attempt, before the head read the channel's end) got
        nothing of it: it is replaced, once, and the request goes to the new one."""
        try:
            proc.send(request)
            return proc
        except TransportError:
            if self.cancelled:
                raise
            self._drop(proc)
        try:
            self.start()
        except ServerError as exc:
            raise TransportError(self.rig.name, Reason.LOST, f"worker restart failed: {exc}") from exc
        fresh = self.proc
        assert fresh is not None
        try:
            fresh.send(request)
        except TransportError:
            self._drop(fresh)
            raise
        return fresh

    def _collect(self, job: Job, done: Done) -> Outcome:
        """Validate the attempt's result, as sent in the "done" line or else fetched; only a valid
        success is a success. `done.error`: why the worker died, when it could not write a result."""
        try:
            record = fetch_result(self.transport, job, done.result if isinstance(done.result, str) else None)
        except TransportError as exc:
            if exc.reason == Reason.MISSING:
                why = f": {done.error}" if done.error else ""
                return Outcome(False, reason=Reason.MISSING,
                               detail=f"no result file {job.result_path} (worker exit {done.exit}{why})")
            return Outcome(False, reason=exc.reason, detail=exc.detail)
        except ResultError as exc:
            return Outcome(False, reason=exc.reason, detail=str(exc))
        if record["status"] != contract.Status.SUCCESS:
            reason = Reason.REFUSED if done.exit == protocol.EXIT_REFUSED else Reason.ERROR
            return Outcome(False, reason=reason, detail=record["error"], record=record)
        if done.exit != 0:
            return Outcome(False, reason=Reason.EXIT, detail=f"worker exit {done.exit} beside a success record",
                           record=record)
        return Outcome(True, value=job.payload.value(record), record=record, chance=job.payload.chance(record))

    def _drop(self, proc: SlotProcess) -> None:
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
