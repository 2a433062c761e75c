"""A slot server: one long-lived process per (rig, GPU) that runs trials on request.

Starting python and importing torch and scipy costs seconds, more than a trial. The rig's server
(worker.rig_server) pays it once and forks one slot server per GPU from itself; a slot server keeps
parsed data across trials and runs each trial in a forked child so a crash, leak or hang in one trial
cannot poison the next. The slot server never touches the GPU (a forked child could not use it then);
the child does.

Forking a process that holds torch, and tearing the child down again, costs milliseconds even in
huge pages (worker.hugepages). Neither waits on the trial's path: the next trial's child is forked
ahead (a spare, waiting for its job on a pipe) halfway through the running trial, judged by the last
one's length (0.5 s in at most), clear of the bursts of starts and ends when a rig's slots run in
step; and a child reports its exit status on a pipe once its result file is written, so "done" goes
out while the kernel is still freeing its memory. The next trial starts only after that child is gone: one trial's
process at a time per slot.

A fork that fails (a process limit, no memory) fails the one request that needed it, with why; a spare
that cannot be forked ahead is forked again when a job needs it.

Protocol (worker/protocol.py): run requests and pings on stdin; on stdout "ready" once, then "done"
per request, "pong" per ping, "error" for a line it cannot read (the rig's server adds the slot's
address to each line). EOF on stdin (the coordinator or the rig's server went away) kills the running
trial and ends the server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import stat
import sys
import time
from pathlib import Path

from worker import VERSION, contract, hugepages, protocol
from worker.contract import Job
from worker.files import write_atomic
from worker.protocol import EXIT_FAILED, BadRequest, Done, Ping, Ready, RunRequest
from worker.run import execute

_PR_SET_PDEATHSIG = 1
_LAST_WORDS = 1000  # bytes: with the exit status, one pipe write, atomic and never blocking
SPARE_AFTER_S = 0.5  # into a running trial, at most, the server forks the next trial's child
_INLINE_RESULT_BYTES = 1 << 20
EXIT_GRACE_S = 30.0  # for a finished child to exit (free its memory and GPU) before it is killed


class Lines:
    """Lines from a raw fd without threads (forking beside threads is unsafe)."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.eof = fd, b"", False
        os.set_blocking(fd, False)

    def feed(self) -> bool:
        """Read what is there; False when nothing was (would block, or EOF)."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        self.buffer += chunk
        self.eof = self.eof or not chunk
        return bool(chunk)

    def pop(self) -> bytes | None:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return None
        self.buffer = rest
        return line


def _emit(event: protocol.Event) -> None:
    sys.stdout.write(protocol.encode_event(event) + "\n")
    sys.stdout.flush()


def die_with_parent() -> None:
    """This process gets SIGKILL if its parent dies: a killed rig or slot server never leaves a slot server
    or a trial holding a GPU."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _read_request(fd: int) -> RunRequest | None:
    """The one request a child waits for; None when the server dismisses it (EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        data += chunk
    request = protocol.decode_request(data.decode())
    assert isinstance(request, RunRequest)
    return request


def _child(jobs: int, report: int, root: Path, own_hash: str, cache: dict) -> None:
    """Wait for a job, run it and exit, whatever happens. The exit status, and an exception that escaped
    the job (no result written: a full disk, say), go to the server through `report`, a pipe: the log
    may be unwritable."""
    status, words = EXIT_FAILED, b""
    try:
        die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        request = _read_request(jobs)
        if request is None:
            os._exit(0)
        log_path = contract.resolve_inside(root, request.log)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)  # the server's logging handler writes to fd 2: now the log
        _, status = execute(request.job, root, own_hash, cache)
    except BaseException as exc:  # noqa: BLE001 - nothing may escape a forked child
        words = repr(exc).encode()[:_LAST_WORDS]
        print(f"worker child failed: {exc!r}", file=sys.stderr)
    finally:  # the report goes out even if stderr fails (a full disk); the child never returns into the server
        try:
            try:
                sys.stderr.flush()
            finally:
                os.write(report, b"%d\n%s" % (status, words))
        finally:
            os._exit(status)


class _Child:
    """A forked child: a spare until it is given its job, then the running trial."""

    def __init__(self, root: Path, own_hash: str, cache: dict, inherited: list[int]):
        jobs, self.jobs = os.pipe()
        self.report, report = os.pipe()
        try:
            self.pid = os.fork()
        except OSError:
            for fd in (jobs, self.jobs, self.report, report):
                os.close(fd)
            raise
        if self.pid == 0:
            for fd in (self.jobs, self.report, *inherited):  # other children's pipes: theirs alone
                os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)  # the server's requests are not the trial's to read
            os.close(null)
            _child(jobs, report, root, own_hash, cache)
        os.close(jobs)
        os.close(report)
        os.set_blocking(self.report, False)  # a process the trial left behind may hold the other end
        self.pidfd = os.pidfd_open(self.pid)
        self.exit: int | None = None

    def fds(self) -> list[int]:
        return [fd for fd in (self.jobs, self.report, self.pidfd) if fd >= 0]

    def give(self, request: RunRequest) -> None:
        try:
            os.write(self.jobs, protocol.encode_request(request).encode() + b"\n")
        finally:
            self.dismiss()

    def dismiss(self) -> None:
        """Close the job pipe: a spare that has no job yet exits."""
        if self.jobs >= 0:
            os.close(self.jobs)
            self.jobs = -1

    def kill(self) -> None:
        if self.exit is None:
            os.kill(self.pid, signal.SIGKILL)

    def read_report(self) -> tuple[int, str] | None:
        """(exit status, last words) once the child has reported; None before that, or if it never will."""
        try:
            data = os.read(self.report, 2 * _LAST_WORDS)
        except BlockingIOError:
            return None
        status, _, words = data.partition(b"\n")
        return (int(status), words.decode(errors="replace")) if status else None

    def reap(self, limit: float) -> int:
        """Wait up to `limit` seconds for the child to exit, kill it after that; its exit status."""
        if self.exit is None:
            with selectors.DefaultSelector() as sel:
                sel.register(self.pidfd, selectors.EVENT_READ)
                if not sel.select(max(limit, 0)):
                    os.kill(self.pid, signal.SIGKILL)
            self.exit = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            for fd in self.fds():
                os.close(fd)
            self.jobs = self.report = self.pidfd = -1
        return self.exit


class _Server:
    """The serve loop's state: the data cache its children inherit, the spare, the last trial's child."""

    def __init__(self, root: Path, own_hash: str, lines: Lines, cache: dict):
        self.root, self.own_hash, self.lines, self.cache = root, own_hash, lines, cache
        self.warm: dict | None = None  # the data refs last parsed into the cache
        self.spare: _Child | None = None
        self.running: _Child | None = None
        self.finished: _Child | None = None  # the last trial's child, reported but maybe still exiting
        self.spare_after_s = SPARE_AFTER_S  # into the next trial: half the last one's length, at most SPARE_AFTER_S

    def fork_spare(self) -> OSError | None:
        """Fork the next trial's child unless it is there; the error when the fork failed."""
        if self.spare is None:
            inherited = [fd for child in (self.running, self.finished) if child is not None for fd in child.fds()]
            try:
                self.spare = _Child(self.root, self.own_hash, self.cache, inherited)
            except OSError as exc:
                return exc
        return None

    def idle(self) -> None:
        """Wait for input on stdin; meanwhile fork the spare, and reap the last trial's child, and the
        spare if something kills it (the next job forks another)."""
        self.fork_spare()
        with selectors.DefaultSelector() as sel:
            sel.register(self.lines.fd, selectors.EVENT_READ)
            for child in (self.finished, self.spare):
                if child is not None:
                    sel.register(child.pidfd, selectors.EVENT_READ, child)
            while True:
                for key, _ in sel.select():
                    if key.data is None:
                        self.lines.feed()
                        return
                    sel.unregister(key.fd)
                    key.data.reap(0)
                    self.finished = None if key.data is self.finished else self.finished
                    self.spare = None if key.data is self.spare else self.spare

    def close(self) -> None:
        """Dismiss the spare and reap every child (the server is ending)."""
        for child in (self.spare, self.running, self.finished):
            if child is not None:
                child.dismiss()
                child.reap(EXIT_GRACE_S)
        self.spare = self.running = self.finished = None

    def run(self, request: RunRequest) -> bool:
        """Hand the job to a child, wait with the time limit, answer. False when stdin closed meanwhile."""
        job_file = contract.safe_relpath("<request>", "job", request.job)
        contract.safe_relpath("<request>", "log", request.log)
        timeout = request.timeout_s
        if self.finished is not None:  # one trial's process at a time: the last one must be gone
            self.finished.reap(EXIT_GRACE_S)
            self.finished = None
        started = time.monotonic()
        try:
            if request.text is not None:  # the job came in the request: its file is written here
                write_atomic(contract.resolve_inside(self.root, job_file), request.text.encode(), durable=False)
        except (OSError, contract.ContractError) as exc:
            return _refused(job_file, started, f"cannot write the job file {job_file}: {exc}")
        try:
            child = self.running = self._give(request)
        except OSError as exc:
            return _refused(job_file, started, f"cannot fork the trial's process: {exc}")
        job = self._preload(job_file)  # for the spares forked from now on
        report, timed_out = self._wait(child, started + timeout, started + self.spare_after_s)
        self.running = None
        self.spare_after_s = min(SPARE_AFTER_S, (time.monotonic() - started) / 2)
        if self.lines.eof:
            child.kill()
            child.reap(EXIT_GRACE_S)
            return False
        if report is None:  # it died before reporting, or ran out of time
            if timed_out:
                child.kill()
            report = (child.reap(EXIT_GRACE_S), "")
        else:
            self.finished = child
        status, words = report
        result = None if timed_out or job is None else _result_text(self.root, job)
        _emit(Done(job=job_file, exit=status, timed_out=timed_out, seconds=round(time.monotonic() - started, 4),
                   error=words or None, result=result))
        return True

    def _preload(self, job_file: str) -> Job | None:
        """The job, if it is valid, with its data parsed into the cache unless the last job's was the same
        data, so every later child inherits it. Errors are left for the child, which reports them in the
        result file and checks its data against its job whatever it inherited."""
        from worker.data import load_dataset

        try:
            job = contract.load_job(contract.resolve_inside(self.root, job_file))
        except contract.ContractError:
            return None
        if job.payload.data != self.warm:
            try:
                load_dataset(job.payload, self.root, self.cache)
                self.warm = job.payload.data
            except Exception:  # noqa: BLE001 - the child reports the same error properly
                pass
        return job

    def _give(self, request: RunRequest) -> _Child:
        """The spare, given the job; a fresh child if the spare died while it waited. OSError when no child
        could be forked."""
        for _ in range(2):
            error = self.fork_spare()
            if error is not None:
                raise error
            child, self.spare = self.spare, None
            assert child is not None
            try:
                child.give(request)
                return child
            except BrokenPipeError:
                child.reap(0)
        raise OSError(f"the trial's process {child.pid} died before it could take the job")

    def _wait(self, child: _Child, deadline: float, spare_at: float) -> tuple[tuple[int, str] | None, bool]:
        """Until the child reports or exits, stdin closes or the deadline passes: (report, timed out).
        Meanwhile, at `spare_at`, the next trial's child is forked."""
        with selectors.DefaultSelector() as sel:
            sel.register(child.report, selectors.EVENT_READ)
            sel.register(child.pidfd, selectors.EVENT_READ)
            sel.register(self.lines.fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return None, True
                events = sel.select(max((deadline if self.spare else min(deadline, spare_at)) - now, 0))
                ready = {key.fd for key, _ in events}
                if child.report in ready:
                    report = child.read_report()
                    if report is not None:
                        return report, False
                    sel.unregister(child.report)  # EOF without a report: the exit status will tell
                if child.pidfd in ready:
                    return child.read_report(), False
                if self.lines.fd in ready:
                    self.lines.feed()
                    if self.lines.eof:
                        return None, False
                if self.spare is None and time.monotonic() >= spare_at:
                    if self.fork_spare() is not None:
                        spare_at = deadline  # no spare this trial: the next job forks its child itself


def _refused(job_file: str, started: float, why: str) -> bool:
    """The answer to a request no trial could start for."""
    _emit(Done(job=job_file, exit=EXIT_FAILED, timed_out=False, seconds=round(time.monotonic() - started, 4),
               error=why))
    return True


def _result_text(root: Path, job: Job) -> str | None:
    """The attempt's result file, to travel in the "done" line and spare the coordinator a file transfer.
    None unless it is a plain file of sane size; the coordinator then fetches it and says what is wrong."""
    try:
        fd = os.open(contract.resolve_inside(root, job.result_path), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except (OSError, contract.ContractError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _INLINE_RESULT_BYTES:
            return None
        return os.read(fd, info.st_size + 1).decode()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)


def serve_slot(root: Path, own_hash: str, cache: dict) -> int:
    """Serve trials on stdin and stdout until stdin closes. Runs in a slot server forked from the rig's
    server, whose imports (and preloaded data, `cache`) it shares."""
    logging.basicConfig(level=logging.INFO, force=True, stream=sys.stderr,  # once, for every trial's log
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lines = Lines(sys.stdin.fileno())
    server = _Server(root, own_hash, lines, cache)
    _emit(Ready(pid=os.getpid(), pgid=os.getpgid(0), code_hash=own_hash, version=VERSION,
                python=sys.version.split()[0], root=str(root), huge_pages_mib=hugepages.huge_mib(),
                data_files=len(cache)))
    try:
        while True:
            raw = lines.pop()
            if raw is None:
                if lines.eof:
                    return 0
                server.idle()
                continue
            line = raw.decode(errors="replace")
            try:
                request = protocol.decode_request(line)
                if isinstance(request, Ping):
                    _emit(request)  # the pong
                elif not server.run(request):
                    return 0
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                _emit(BadRequest(f"bad request {line[:200]!r}: {exc}"))
    finally:
        server.close()
