"""The head's own slots: the same Transport as a rig, with subprocesses and files in a local workdir."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from coordinator.inventory import Rig
from coordinator.outcome import Reason
from coordinator.transport import Completed, TransportError
from coordinator.transport.streams import StreamProcess, home_relative, relpath
from worker.files import write_atomic


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalProcess(StreamProcess):
    """A subprocess that leads its own session, so kill() reaches everything it started."""

    def __init__(self, rig: str, popen: subprocess.Popen[bytes]):
        assert popen.stdin and popen.stdout and popen.stderr
        super().__init__(rig, popen.stdout, popen.stderr)
        self._popen, self._stdin, self._killed = popen, popen.stdin, False

    def send_line(self, line: str) -> None:
        if "\n" in line:
            raise ValueError("a line must not contain a newline")
        try:
            self._stdin.write(line.encode() + b"\n")
            self._stdin.flush()
        except (OSError, ValueError) as exc:  # broken pipe, or stdin already closed by kill()
            raise TransportError(self.rig, Reason.LOST, f"cannot write to the process: {exc}") from exc

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        # Once only: after the group is gone its id may be reused by an unrelated process group.
        if not self._killed:
            self._killed = True
            _killpg(self._popen.pid)
        try:
            self._stdin.close()
        except OSError:
            pass
        self.wait(5)


class LocalTransport:
    """Runs commands in rig.workdir on this machine. Relative workdirs and program paths are relative
    to the coordinator's cwd (the shipped rigs.toml says `.venv/bin/python`); a leading `~/` in any
    argument is the home directory, as on an SSH rig."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.workdir = Path(rig.workdir).expanduser().absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _argv(self, argv: list[str]) -> list[str]:
        words = [os.path.expanduser(a) if home_relative(a) else a for a in argv]
        if "/" in words[0] and not os.path.isabs(words[0]):
            words[0] = os.path.abspath(words[0])
        return words

    def _popen(self, argv: list[str], env: dict[str, str] | None, stdin: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv(argv), cwd=self.workdir, env={**os.environ, **(env or {})},
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> Completed:
        try:
            proc = self._popen(argv, env, subprocess.DEVNULL if stdin is None else subprocess.PIPE)
        except OSError as exc:  # what a shell would report: 127 not found, 126 not executable
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return Completed(code, "", f"{argv[0]}: {exc.strerror}\n")
        with proc:  # on the way out: close the pipes, reap the leader
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                _killpg(proc.pid)
                raise TransportError(self.rig.name, Reason.TIMEOUT, f"{argv[0]} still running after {timeout:g} s;"
                                     " its process group was killed") from None
        return Completed(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> LocalProcess:
        try:
            return LocalProcess(self.rig.name, self._popen(argv, env, subprocess.PIPE))
        except OSError as exc:
            raise TransportError(self.rig.name, Reason.LOST, f"cannot start {argv[0]}: {exc.strerror}") from exc

    def kill_groups(self, *pgids: int) -> None:
        for pgid in pgids:
            _killpg(pgid)

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        target = self.workdir / relpath(path)
        try:
            write_atomic(target, data, mode, durable=False)  # as an SFTP write: atomic, not fsynced
        except OSError as exc:
            raise TransportError(self.rig.name, Reason.IO, f"cannot write {target}: {exc.strerror}") from exc

    def get_bytes(self, path: str) -> bytes:
        target = self.workdir / relpath(path)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise TransportError(self.rig.name, Reason.MISSING, f"{target} does not exist") from None
        except OSError as exc:
            raise TransportError(self.rig.name, Reason.IO, f"cannot read {target}: {exc.strerror}") from exc

    def close(self) -> None:
        """Nothing to release: processes are killed by their owners, not by closing the transport."""
