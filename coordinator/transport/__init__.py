"""The one boundary between the coordinator and a rig: run a command, stream a long-lived process,
move files. `LocalTransport` serves the head, `SshTransport` every other rig; nothing above this
package knows which one it holds.

Commands are argv lists. A transport never hands a job field to a shell: the SSH transport quotes
every argument, and job contents travel as files or stdin lines, never in a command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from coordinator.inventory import Rig
from coordinator.outcome import Reason


class TransportError(RuntimeError):
    """The rig could not be reached or the channel broke. `reason` is one word (unreachable, host-key,
    auth, timeout, lost, io, missing) for tables and trial attributes."""

    def __init__(self, rig: str, reason: Reason, detail: str):
        self.rig, self.reason, self.detail = rig, reason, detail
        super().__init__(f"rig '{rig}': {reason}: {detail}")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class Process(Protocol):
    """A long-running process on a rig, in its own process group, talking in lines."""

    def send_line(self, line: str) -> None: ...

    def read_line(self, timeout: float) -> str | None:
        """The next stdout line without its newline; None if none came within `timeout`.
        Raises TransportError('lost') once the process has exited or the channel closed."""

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if still running after `timeout`."""

    def kill(self) -> None:
        """SIGKILL the process's whole group on the rig; idempotent, never raises."""


class Transport(Protocol):
    rig: Rig

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> Completed:
        """Run argv to completion in the rig's workdir (a hard limit: the process group is killed at
        `timeout`, then TransportError('timeout'))."""

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> Process:
        """Start argv in the rig's workdir, in a new process group, with piped stdin/stdout."""

    def kill_groups(self, *pgids: int) -> None:
        """SIGKILL these process groups on the rig (processes started by start() lead their own, and may
        make more); never raises."""

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file under the workdir atomically (temp + rename), creating parent folders."""

    def get_bytes(self, path: str) -> bytes:
        """Read a file under the workdir; TransportError('missing') if it does not exist."""

    def close(self) -> None: ...


def connect(rig: Rig) -> Transport:
    """The transport for a rig: local for the head, SSH for every other rig."""
    if rig.local:
        from coordinator.transport.local import LocalTransport

        return LocalTransport(rig)
    from coordinator.transport.ssh import SshTransport

    return SshTransport(rig)
