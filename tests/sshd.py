"""A throwaway OpenSSH server on a loopback address: a real rig for the integration tests.

Each server gets its own 127.0.0.x address, port, host key, client key, authorized_keys and
known_hosts, all in a temp folder, so tests never touch ~/.ssh or the system sshd. Every session it
starts carries STEP2_TEST_SSHD=<token> in its environment, which lets a test list exactly the
processes running "on the rig" and lets kill() take all of them down like a rig losing power.
"""

from __future__ import annotations

import getpass
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from coordinator.inventory import Rig

SSHD = Path("/usr/sbin/sshd")
MARKER = "STEP2_TEST_SSHD"
_addresses = itertools.count(2)


def keygen(path: Path) -> str:
    """A fresh ed25519 key pair at path (+ .pub); returns the public line 'ssh-ed25519 AAAA...'."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def fingerprint(public_line: str) -> str:
    """The SHA256:... fingerprint OpenSSH (and paramiko) show for a public key line."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=public_line, capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def next_address() -> str:
    """127.0.0.2, 127.0.0.3, ...: distinct servers look like distinct hosts in known_hosts."""
    return f"127.0.0.{2 + (next(_addresses) - 2) % 250}"


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def processes(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has key=value: what runs 'on the rig'."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        stat = _stat(int(entry.name))
        if needle in env and stat and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[1], []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class SshServer:
    """`sshd -D` on addr:port with its own keys; start() returns once the banner is served."""

    def __init__(self, addr: str, root: Path, max_sessions: int = 10):
        self.addr, self.root, self.max_sessions = addr, root, max_sessions
        self.token = uuid.uuid4().hex
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._orphans: set[int] = set()  # connection handlers left running by stop()
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(root / "host_ed25519")
        self.client_key = root / "client_ed25519"
        (root / "authorized_keys").write_text(keygen(self.client_key) + "\n")
        self.known_hosts = root / "known_hosts"
        self.log = root / "sshd.log"

    @property
    def known_hosts_host(self) -> str:
        return f"[{self.addr}]:{self.port}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.host_key)

    def _config(self) -> Path:
        path = self.root / "sshd_config"
        path.write_text("\n".join([
            f"ListenAddress {self.addr}:{self.port}",
            f"HostKey {self.root / 'host_ed25519'}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            f"MaxSessions {self.max_sessions}",
            "Subsystem sftp internal-sftp",
            f"SetEnv {MARKER}={self.token}",
        ]) + "\n")
        return path

    def start(self, timeout: float = 5.0) -> SshServer:
        """Start sshd (on the same port as before, if it ran before) and wait for its banner."""
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.port = self.port or free_port(self.addr)
        self.known_hosts.write_text(f"{self.known_hosts_host} {self.host_key}\n")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self._config())],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection((self.addr, self.port), timeout=0.5) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"sshd on {self.addr}:{self.port} served no banner in {timeout} s")

    def stop(self) -> None:
        """Stop accepting connections (SIGTERM, like `systemctl stop ssh`): open sessions and the
        processes they started keep running, as on a real rig."""
        if self.proc and self.proc.poll() is None:
            self._orphans.update(_descendants(self.proc.pid)[1:])
            self.proc.terminate()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL sshd, its per-connection children and every process its sessions started, and wait
        until they have exited: the rig is gone. Connections see a reset at once."""
        killed: set[int] = set()
        for _ in range(3):  # a process may fork while we kill
            pids = set(processes(MARKER, self.token))
            pids.update(p for p in self._orphans if _cmdline(p).startswith(b"sshd"))
            if self.proc and self.proc.poll() is None:
                pids.update(_descendants(self.proc.pid))
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed |= pids
        # a killed process is alive until its exit has torn its memory down: milliseconds, more under load
        wait_for(lambda: all((_stat(pid) or ("Z",))[0] == "Z" for pid in killed), timeout=10)
        self._orphans.clear()
        if self.proc:
            self.proc.wait(5)

    def processes(self) -> list[int]:
        """Processes started by this server's sessions that are still running."""
        return processes(MARKER, self.token)

    def rig(self, name: str = "rig", slots: int = 1, python: str = sys.executable,
            workdir: str | None = None, **overrides: object) -> Rig:
        """A coordinator Rig for this server; overrides replace any other Rig field."""
        rig = Rig(name=name, python=python, workdir=workdir or str(self.root / "rigs" / name), slots=slots,
                  host=self.addr, port=self.port, user=getpass.getuser(), identity_file=str(self.client_key),
                  known_hosts=str(self.known_hosts), connect_timeout_s=5.0)
        return replace(rig, **overrides)


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll until predicate() is true (returns True) or timeout passes (returns False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
