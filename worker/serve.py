"""A warm slot: one long-lived worker per (rig, GPU) that runs trials on request.

Starting python and importing torch and scipy costs seconds, more than a trial. The server pays it
once, keeps parsed data across trials, and runs each trial in a forked child so a crash, leak or
hang in one trial cannot poison the next. The parent never touches the GPU (a forked child could
not use it then); the child does.

Protocol: one JSON object a line. stdin: {"job": path, "timeout_s": s, "log": path} or
{"ping": n}. stdout: {"event": "ready", ...} once, then {"event": "done", ...} per job (with "error"
when the trial died of an exception it could not put in a result file), {"event": "pong", ...} per
ping, {"event": "error", ...} for a request it cannot read. EOF on stdin (the coordinator went away)
kills the running trial and ends the server.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import selectors
import signal
import sys
import time
from pathlib import Path
from typing import Any

from worker import VERSION, contract
from worker.run import EXIT_FAILED, execute

_PR_SET_PDEATHSIG = 1
_LAST_WORDS = 1000  # bytes: one pipe write, atomic and never blocking


class _Lines:
    """Lines from a raw fd without threads (forking beside threads is unsafe)."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.eof = fd, b"", False
        os.set_blocking(fd, False)

    def feed(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        self.buffer += chunk
        self.eof = self.eof or not chunk

    def pop(self) -> str | None:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return None
        self.buffer = rest
        return line.decode(errors="replace")


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """The child gets SIGKILL if the server dies, so a killed slot never leaves a trial holding a GPU."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child(job_file: str, log_file: str, root: Path, own_hash: str, cache: dict, last_words: int) -> None:
    """Run the job and exit, whatever happens. An exception that escapes the job (no result written:
    a full disk, say) also goes to the parent through `last_words`, a pipe: the log may be unwritable."""
    status = EXIT_FAILED
    try:
        _die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        log_path = contract.resolve_inside(root, log_file)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        logging.basicConfig(level=logging.INFO, force=True, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        _, status = execute(job_file, root, own_hash, cache)
    except BaseException as exc:  # noqa: BLE001 - nothing may escape a forked child
        os.write(last_words, repr(exc).encode()[:_LAST_WORDS])
        print(f"worker child failed: {exc!r}", file=sys.stderr)
    finally:
        try:
            sys.stderr.flush()
        finally:  # even when stderr cannot be written: the child must never return into the server
            os._exit(status)


def _preload(job_file: str, root: Path, cache: dict) -> None:
    """Parse the job's data into the parent's cache so every later child inherits it. Errors are
    left for the child, which reports them in the result file."""
    from worker.data import load_dataset

    try:
        load_dataset(contract.load_job(contract.resolve_inside(root, job_file)), root, cache)
    except Exception:  # noqa: BLE001 - the child reports the same error properly
        pass


def _run_one(request: dict, lines: _Lines, root: Path, own_hash: str, cache: dict) -> bool:
    """Fork, wait with the time limit, answer. False when stdin closed meanwhile (stop serving)."""
    job_file = contract.safe_relpath("<request>", "job", request.get("job"))
    log_file = contract.safe_relpath("<request>", "log", request.get("log"))
    timeout = float(request["timeout_s"])
    _preload(job_file, root, cache)
    started = time.monotonic()
    last_words, child_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(last_words)
        _child(job_file, log_file, root, own_hash, cache, child_end)
    os.close(child_end)
    os.set_blocking(last_words, False)  # a process the trial left behind may hold the other end
    pidfd = os.pidfd_open(pid)
    timed_out, alive = False, True
    with selectors.DefaultSelector() as sel:
        sel.register(pidfd, selectors.EVENT_READ)
        sel.register(lines.fd, selectors.EVENT_READ)
        while True:
            left = started + timeout - time.monotonic()
            events = sel.select(max(left, 0)) if left > 0 else []
            if not events and left <= 0:
                timed_out = True
                break
            if any(key.fd == pidfd for key, _ in events):
                break
            lines.feed()
            if lines.eof:
                alive = False
                break
    if timed_out or not alive:
        os.kill(pid, signal.SIGKILL)
    os.close(pidfd)
    _, wait_status = os.waitpid(pid, 0)
    try:
        words = os.read(last_words, _LAST_WORDS).decode(errors="replace")
    except BlockingIOError:
        words = ""
    os.close(last_words)
    if alive:
        _emit("done", job=job_file, exit=os.waitstatus_to_exitcode(wait_status), timed_out=timed_out,
              seconds=round(time.monotonic() - started, 4), **({"error": words} if words else {}))
    return alive


def serve(root: Path) -> int:
    """Serve trials until stdin closes."""
    import torch._dynamo  # noqa: F401 - torch.optim imports it at the first optimizer (~2 s): once, not per trial

    import worker.trial  # noqa: F401 - the warm-up: numpy, scipy and torch imported once

    root = root.resolve()
    own_hash = contract.code_hash()
    cache: dict = {}
    lines = _Lines(sys.stdin.fileno())
    _emit("ready", pid=os.getpid(), pgid=os.getpgid(0), code_hash=own_hash, version=VERSION,
          python=sys.version.split()[0], root=str(root))
    with selectors.DefaultSelector() as sel:
        sel.register(lines.fd, selectors.EVENT_READ)
        while True:
            line = lines.pop()
            if line is None:
                if lines.eof:
                    return 0
                sel.select()
                lines.feed()
                continue
            try:
                request = json.loads(line)
                if "ping" in request:
                    _emit("pong", ping=request["ping"])
                elif not _run_one(request, lines, root, own_hash, cache):
                    return 0
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                _emit("error", error=f"bad request {line[:200]!r}: {exc}")
