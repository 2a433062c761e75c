"""What the local and SSH transports share: reading a process's output in threads and the rules for
paths and command lines."""

from __future__ import annotations

import posixpath
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

from coordinator.outcome import Reason
from coordinator.transport import TransportError

STDERR_TAIL_LINES = 20


def home_relative(arg: str) -> bool:
    """`~` or `~/...`: the one shell expansion both transports apply to workdirs and arguments."""
    return arg == "~" or arg.startswith("~/")


def relpath(path: str) -> str:
    """A path under the workdir. Transports refuse anything that could write outside it."""
    norm = posixpath.normpath(path)
    if not path or path.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ValueError(f"path {path!r} must stay inside the rig's workdir")
    return norm


def pump(stream: BinaryIO, sink: Callable[[bytes], object]) -> threading.Thread:
    """Hand each line of stream to sink from a daemon thread, then b'' at EOF. Reading in a thread
    keeps pipes and SSH windows drained, so a chatty process can never stall on a full buffer."""

    def read() -> None:
        try:
            for line in iter(stream.readline, b""):
                sink(line)
        except (OSError, EOFError, ValueError):  # the stream was closed under us: same as EOF
            pass
        finally:
            sink(b"")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


class StreamProcess:
    """The line-reading half of a `Process`: stdout lines queue up for read_line, stderr keeps its last
    lines so a process that dies can say why. Subclasses add send_line, wait and kill."""

    def __init__(self, rig: str, stdout: BinaryIO, stderr: BinaryIO):
        self.rig = rig
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._eof = False
        self._stderr: deque[bytes] = deque(maxlen=STDERR_TAIL_LINES)
        pump(stdout, self._lines.put)
        self._stderr_done = pump(stderr, self._stderr.append)

    def wait(self, timeout: float) -> int | None:
        raise NotImplementedError

    def read_line(self, timeout: float) -> str | None:
        if not self._eof:
            try:
                line = self._lines.get(timeout=max(timeout, 0))
            except queue.Empty:
                return None
            if line:
                return line.decode(errors="replace").rstrip("\r\n")
            self._eof = True
        raise self.lost()

    def lost(self) -> TransportError:
        """The error for a process whose output ended: its exit status and last words if known."""
        status = self.wait(1.0)
        self._stderr_done.join(1.0)
        tail = b"".join(self._stderr).decode(errors="replace").strip()
        how = "still running" if status is None else f"exited with status {status}"
        return TransportError(self.rig, Reason.LOST, f"process output ended ({how})"
                                                + (f"; stderr: {tail}" if tail else ""))
