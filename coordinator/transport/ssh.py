"""SSH rigs, on paramiko directly: one persistent connection carries every command, worker channel and
file transfer, so a dispatch costs a channel, not a fresh `ssh` and login.

Host keys come only from rig.known_hosts and are never added automatically; nothing ever prompts.
Every remote command leads its own process group (sshd makes an exec session's shell a session
leader; the shell prints its pid, then execs the command), so a timeout or kill() takes down everything
the command started, on the rig, not just the channel.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import paramiko

from coordinator.inventory import Rig
from coordinator.outcome import Reason
from coordinator.transport import Completed, TransportError
from coordinator.transport.streams import StreamProcess, home_relative, pump, relpath

KEEPALIVE_S = 15
RUN_BACKSTOP_S = 5  # the rig kills run() commands itself this long after the head's limit
SESSION_START_S = 30.0  # login shell and rc files on a busy rig: slower than the network handshake
_PGID_TAG = b"step2-pgid "
_CHANNEL_ERRORS = (paramiko.SSHException, OSError, EOFError)

# Its transport threads log, as tracebacks, failures that reach us as exceptions and are reported in one
# line with the rig's name (a host that never sends a banner, say).
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"{hostname} not in known_hosts")
        self.key = key


class _RejectUnknown(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


def _word(arg: str) -> str:
    """One shell word: quoted, except that a leading ~ is left for the rig's shell to expand."""
    return '"$HOME"' + shlex.quote(arg[1:]) if home_relative(arg) else shlex.quote(arg)


def _sh(script: str) -> str:
    """Run script with /bin/sh whatever the login shell is (fish, csh); exec keeps sshd's pid."""
    return "exec /bin/sh -c " + shlex.quote(script)


def _command(workdir: str, argv: list[str], env: dict[str, str] | None = None,
             limit: float | None = None) -> str:
    """The remote command: print the group id, enter (and create) the workdir, exec argv under env,
    optionally under `timeout` so the rig stops it even if the head is gone."""
    for key in env or {}:
        if not key.isidentifier():
            raise ValueError(f"environment variable name {key!r} is not an identifier")
    assigns = [shlex.quote(f"{k}={v}") for k, v in (env or {}).items()]
    backstop = ["timeout", "-s", "KILL", f"{limit:.1f}"] if limit else []
    words = " ".join([*backstop, "env", *assigns, *map(_word, argv)])
    wd = _word(workdir)
    return _sh(f"echo {_PGID_TAG.decode()}$$; mkdir -p {wd} && cd {wd} && exec {words}")


class SshProcess(StreamProcess):
    """A command streaming lines over one channel; kill() reaches its whole process group."""

    def __init__(self, transport: SshTransport, channel: paramiko.Channel, pgid: int,
                 stdout: BinaryIO, stderr: BinaryIO):
        super().__init__(transport.rig.name, stdout, stderr)
        self._transport, self._channel, self.pgid, self._killed = transport, channel, pgid, False

    def send_line(self, line: str) -> None:
        if "\n" in line:
            raise ValueError("a line must not contain a newline")
        if self._channel.exit_status_ready():  # paramiko would accept the line until the channel closes
            raise TransportError(self.rig, Reason.LOST, "cannot write to the process: it has exited")
        try:
            self._channel.sendall(line.encode() + b"\n")
        except _CHANNEL_ERRORS as exc:
            raise TransportError(self.rig, Reason.LOST, f"cannot write to the process: {exc}") from exc

    def wait(self, timeout: float) -> int | None:
        """The exit status; -1 when the channel closed without one (killed by a signal, or lost)."""
        return self._channel.exit_status if self._channel.status_event.wait(timeout) else None

    def kill(self) -> None:
        # Once only: after the group is gone its id may be reused by an unrelated process group.
        if not self._killed:
            self._killed = True
            self._transport.kill_groups(self.pgid)
        self._channel.close()


class SshTransport:
    """Commands, worker processes and files on one SSH rig. Thread-safe: slot threads share it."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self._clients: list[paramiko.SSHClient] = []
        self._lock = threading.Lock()  # guards _clients
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()  # one SFTP channel, one request stream at a time
        self._clients.append(self._connect())  # fail now with a clear reason, not at first use

    # -- connections ------------------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        rig, limit = self.rig, self.rig.connect_timeout_s
        known_hosts = os.path.expanduser(rig.known_hosts)
        key = os.path.expanduser(rig.identity_file) if rig.identity_file else None
        if key and not os.path.isfile(key):
            raise TransportError(rig.name, Reason.AUTH, f"identity file {key} does not exist")
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(known_hosts)
        except FileNotFoundError:
            pass  # every host is unknown: the error says how to trust this one
        except OSError as exc:
            raise TransportError(rig.name, Reason.HOST_KEY, f"cannot read {known_hosts}: {exc.strerror}") from exc
        client.set_missing_host_key_policy(_RejectUnknown())
        try:
            sock = socket.create_connection((rig.host, rig.port), timeout=limit)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small packets, no 40 ms stalls
            client.connect(rig.host, rig.port, rig.user or None, key_filename=key, sock=sock,
                           banner_timeout=limit, auth_timeout=limit, channel_timeout=limit,
                           allow_agent=key is None, look_for_keys=key is None)
        except Exception as exc:
            error = self._connect_error(client, exc, known_hosts)
            client.close()
            if error is None:
                raise
            raise error from exc
        client.get_transport().set_keepalive(KEEPALIVE_S)
        return client

    def _connect_error(self, client: paramiko.SSHClient, exc: Exception,
                       known_hosts: str) -> TransportError | None:
        rig = self.rig
        host = rig.host if rig.port == 22 else f"[{rig.host}]:{rig.port}"
        trust = f"ssh-keyscan -H -p {rig.port} {rig.host} >> {known_hosts}"
        if isinstance(exc, _UnknownHostKey):
            return TransportError(rig.name, Reason.HOST_KEY, (
                f"the host key of {host} is not in {known_hosts}, and unknown keys are never trusted"
                f" automatically. The rig offered {exc.key.get_name()} {exc.key.fingerprint}. Compare it"
                f" with the rig's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the rig),"
                f" then trust it: {trust}"))
        if isinstance(exc, paramiko.BadHostKeyException):
            return TransportError(rig.name, Reason.HOST_KEY, (
                f"the host key of {host} has CHANGED: the rig offered {exc.key.get_name()}"
                f" {exc.key.fingerprint}, {known_hosts} has {exc.expected_key.fingerprint}. Someone may be"
                f" intercepting the connection, or the rig was reinstalled. Only if you know why, remove"
                f" the old key (ssh-keygen -R '{host}' -f {known_hosts}) and trust the new one: {trust}"))
        transport = client.get_transport()
        if isinstance(exc, paramiko.AuthenticationException) or (
                isinstance(exc, paramiko.SSHException) and transport is not None and transport.is_active()):
            return TransportError(rig.name, Reason.AUTH, f"{rig.user}@{host} refused our key"
                                  f" ({rig.identity_file or 'agent or ~/.ssh keys'}): {exc}")
        if isinstance(exc, _CHANNEL_ERRORS):
            return TransportError(rig.name, Reason.UNREACHABLE, f"{host}: {exc or type(exc).__name__}")
        return None

    def _channel(self) -> paramiko.Channel:
        """A new session channel. OpenSSH allows MaxSessions (default 10) sessions per connection: an
        8-slot rig's workers, the SFTP channel and a command fit in one. When the rig refuses another,
        the next connection takes it; dead connections are dropped and replaced."""
        with self._lock:
            for client in list(self._clients):
                transport = client.get_transport()
                try:
                    if transport is not None and transport.is_active():
                        return transport.open_session(timeout=self.rig.connect_timeout_s)
                except paramiko.ChannelException:
                    continue  # this connection is full
                except _CHANNEL_ERRORS:
                    pass
                client.close()
                self._clients.remove(client)
            client = self._connect()
            self._clients.append(client)
            try:
                return client.get_transport().open_session(timeout=self.rig.connect_timeout_s)
            except _CHANNEL_ERRORS as exc:
                raise TransportError(self.rig.name, Reason.LOST, f"cannot open a channel: {exc}") from exc

    def close(self) -> None:
        """Close the connections. Processes still running are left to exit on stdin EOF; kill them
        first if they must stop."""
        with self._sftp_lock:
            if self._sftp is not None:
                self._sftp.close()
                self._sftp = None
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    # -- commands ---------------------------------------------------------------------------------

    def _exec(self, argv: list[str], env: dict[str, str] | None,
              limit: float | None = None) -> tuple[paramiko.Channel, int, BinaryIO, BinaryIO]:
        """Start argv on a new channel; returns it with the process group id and its output files.
        Output before the pgid (a chatty .bashrc) is dropped."""
        channel = self._channel()
        try:
            channel.settimeout(max(self.rig.connect_timeout_s, SESSION_START_S))
            channel.exec_command(_command(self.rig.workdir, argv, env, limit))
            stdout = channel.makefile("rb")
            for line in iter(stdout.readline, b""):
                if _PGID_TAG in line:
                    channel.settimeout(None)
                    return channel, int(line.rpartition(_PGID_TAG)[2]), stdout, channel.makefile_stderr("rb")
            detail = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        except _CHANNEL_ERRORS as exc:
            detail = str(exc) or type(exc).__name__
        channel.close()
        raise TransportError(self.rig.name, Reason.LOST, f"cannot start {argv[0]}: {detail}")

    def kill_groups(self, *pgids: int) -> None:
        """SIGKILL process groups on the rig over a fresh channel; never raises (the rig may be gone)."""
        try:
            channel = self._channel()
            with channel:
                channel.settimeout(self.rig.connect_timeout_s)
                channel.exec_command(_sh("kill -s KILL -- " + " ".join(f"-{pgid}" for pgid in pgids)))
                channel.status_event.wait(self.rig.connect_timeout_s)
        except (TransportError, *_CHANNEL_ERRORS):
            pass

    def run(self, argv: list[str], timeout: float, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> Completed:
        deadline = time.monotonic() + timeout
        channel, pgid, stdout, stderr = self._exec(argv, env, limit=timeout + RUN_BACKSTOP_S)
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [pump(stdout, out.append), pump(stderr, err.append)]
        with channel:
            try:
                if stdin:
                    channel.sendall(stdin)
                channel.shutdown_write()
            except _CHANNEL_ERRORS:
                pass  # the command exited without reading stdin; its status tells the rest
            for reader in readers:
                reader.join(max(0.0, deadline - time.monotonic()))
            done = channel.status_event.wait(max(0.0, deadline - time.monotonic()))
            if not done or any(r.is_alive() for r in readers):
                self.kill_groups(pgid)
                raise TransportError(self.rig.name, Reason.TIMEOUT, f"{argv[0]} still running after {timeout:g} s;"
                                     f" its process group {pgid} was killed on the rig")
            if not channel.get_transport().is_active():
                raise TransportError(self.rig.name, Reason.LOST, f"connection dropped while {argv[0]} ran")
            return Completed(channel.exit_status, b"".join(out).decode(errors="replace"),
                             b"".join(err).decode(errors="replace"))

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> SshProcess:
        """Start a long-running process. It should exit when its stdin closes: if the connection
        drops, that is all it is told."""
        return SshProcess(self, *self._exec(argv, env))

    # -- files ------------------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        """A workdir path as SFTP sees it: relative paths start at the home directory, like a shell."""
        workdir = self.rig.workdir
        base = workdir[2:] if home_relative(workdir) else workdir
        return posixpath.join(base, relpath(path))

    @contextmanager
    def _files(self, path: str) -> Iterator[paramiko.SFTPClient]:
        """The shared SFTP client, (re)opened on demand; its errors become TransportErrors."""
        with self._sftp_lock:
            try:
                if self._sftp is None or self._sftp.get_channel().closed:
                    channel = self._channel()
                    channel.invoke_subsystem("sftp")
                    self._sftp = paramiko.SFTPClient(channel)
                yield self._sftp
            except _CHANNEL_ERRORS as exc:
                if self._sftp is None or self._sftp.get_channel().closed:
                    self._sftp = None
                    raise TransportError(self.rig.name, Reason.LOST, f"SFTP on {path}: {exc}") from exc
                if isinstance(exc, FileNotFoundError):
                    raise TransportError(self.rig.name, Reason.MISSING, f"{path} does not exist") from exc
                raise TransportError(self.rig.name, Reason.IO, f"{path}: {exc}") from exc

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        target = self._path(path)
        folder, name = posixpath.split(target)
        tmp = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        with self._files(target) as sftp:
            try:
                try:
                    fh = sftp.open(tmp, "wb")
                except FileNotFoundError:  # first file in this folder: create it, then retry
                    _makedirs(sftp, folder)
                    fh = sftp.open(tmp, "wb")
                with fh:
                    fh.set_pipelined(True)
                    fh.write(data)
                    fh.chmod(mode)
                written = sftp.stat(tmp).st_size  # paramiko drops the errors of pipelined writes: check
                if written != len(data):
                    raise TransportError(self.rig.name, Reason.IO, f"{target}: only {written} of {len(data)} bytes"
                                                              " reached the rig (is its disk full?)")
                sftp.posix_rename(tmp, target)
            except BaseException:
                _remove_quietly(sftp, tmp)
                raise

    def get_bytes(self, path: str) -> bytes:
        target = self._path(path)
        with self._files(target) as sftp, sftp.open(target, "rb") as fh:
            fh.prefetch()
            return fh.read()


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    if not folder or folder == "/":
        return
    try:
        sftp.stat(folder)
    except FileNotFoundError:
        _makedirs(sftp, posixpath.dirname(folder))
        try:
            sftp.mkdir(folder)
        except OSError:
            sftp.stat(folder)  # another writer made it first: fine; otherwise raise


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except _CHANNEL_ERRORS:
        pass
