"""Transports against the real thing: subprocesses on this machine and OpenSSH servers on loopback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.transport import Completed, Transport, TransportError
from coordinator.transport.ssh import SshTransport
from tests.sshd import SshServer, free_port, keygen, processes, wait_for

PY = sys.executable
ECHO_UPPER = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)"


@pytest.fixture
def mark() -> dict[str, str]:
    """An environment marker: every process a test starts with it can be found (and must be gone)."""
    return {"STEP2_TEST_MARK": uuid.uuid4().hex}


def marked(mark: dict[str, str]) -> list[int]:
    return processes(*next(iter(mark.items())))


def workdir(transport: Transport) -> Path:
    return Path(os.path.expanduser(transport.rig.workdir))


# -- both transports --------------------------------------------------------------------------------

def test_run_passes_argv_env_and_stdin_verbatim(transport: Transport) -> None:
    script = "import os, sys; print(sys.argv[1:]); print(os.getcwd()); print(os.environ['K']); print(sys.stdin.read())"
    args = ["a b", "$HOME", "'q'", '"', ";echo x", "*", "~/y", ""]
    done = transport.run([PY, "-c", script, *args], timeout=20, env={"K": "v w'$x"}, stdin=b"in\n")
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == repr([*args[:6], os.path.expanduser("~/y"), ""])
    assert Path(lines[1]) == workdir(transport).resolve()
    assert lines[2:] == ["v w'$x", "in", ""]


def test_run_reports_status_and_stderr(transport: Transport) -> None:
    done = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=20)
    assert done == Completed(3, "out\n", "err\n")
    assert transport.run(["no-such-program-xyz"], timeout=20).returncode == 127


def test_run_timeout_kills_the_whole_group(transport: Transport, mark: dict[str, str]) -> None:
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        transport.run(["sh", "-c", "(sleep 300 &); sleep 301 & sleep 302"], timeout=0.5, env=mark)
    assert err.value.reason == "timeout"
    assert time.monotonic() - start < 3
    assert wait_for(lambda: not marked(mark), 3), "processes left behind on the rig"


def test_put_and_get_bytes(transport: Transport) -> None:
    transport.put_bytes(b"first", "jobs/s1/trial_0001.json")
    transport.put_bytes(b"second" * 700, "jobs/s1/trial_0001.json", mode=0o600)
    assert transport.get_bytes("jobs/s1/trial_0001.json") == b"second" * 700
    folder = workdir(transport) / "jobs/s1"
    assert os.listdir(folder) == ["trial_0001.json"], "temp files left behind"
    assert stat.S_IMODE((folder / "trial_0001.json").stat().st_mode) == 0o600
    transport.put_bytes(b"x", "a.txt")
    assert stat.S_IMODE((workdir(transport) / "a.txt").stat().st_mode) == 0o644
    with pytest.raises(TransportError) as err:
        transport.get_bytes("results/none.json")
    assert err.value.reason == "missing"
    with pytest.raises(ValueError):
        transport.put_bytes(b"x", "../outside.txt")


def test_process_streams_lines(transport: Transport, mark: dict[str, str]) -> None:
    proc = transport.start([PY, "-u", "-c", ECHO_UPPER], env=mark)
    proc.send_line("hello")
    assert proc.read_line(10) == "HELLO"
    proc.send_line("again")
    assert proc.read_line(10) == "AGAIN"
    assert proc.read_line(0.05) is None
    assert proc.wait(0) is None
    proc.kill()
    proc.kill()  # idempotent
    with pytest.raises(TransportError) as err:
        proc.read_line(5)
    assert err.value.reason == "lost"
    assert wait_for(lambda: not marked(mark), 3)


def test_process_death_reports_status_and_stderr(transport: Transport) -> None:
    script = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\nsys.exit('boom')"
    proc = transport.start([PY, "-c", script])
    assert proc.read_line(10) == "ready"
    proc.send_line("go")
    with pytest.raises(TransportError) as err:
        proc.read_line(10)
    assert err.value.reason == "lost"
    assert "status 1" in err.value.detail and "boom" in err.value.detail
    assert proc.wait(1) == 1
    with pytest.raises(TransportError):
        proc.send_line("anyone?")
    proc.kill()


def test_process_kill_reaches_grandchildren(transport: Transport, mark: dict[str, str]) -> None:
    proc = transport.start(["sh", "-c", "(sleep 300 &); sleep 301 & echo up; wait"], env=mark)
    assert proc.read_line(10) == "up"
    assert wait_for(lambda: len(marked(mark)) >= 3)  # sh, its child, an orphaned grandchild
    proc.kill()
    assert wait_for(lambda: not marked(mark), 3), "kill() left processes behind"


def test_home_relative_workdir(make_transport: Callable[..., Transport], home_dir: str) -> None:
    transport = make_transport(workdir=home_dir)
    home = Path(os.path.expanduser(home_dir))
    assert transport.run(["pwd"], timeout=20).stdout.strip() == str(home)
    transport.put_bytes(b"42", "data/x.json")
    assert (home / "data/x.json").read_bytes() == b"42" == transport.get_bytes("data/x.json")


# -- SSH only: host keys, auth, unreachable rigs, dying rigs --------------------------------------------

def connect_error(rig_server: SshServer, **overrides: object) -> TransportError:
    with pytest.raises(TransportError) as err:
        SshTransport(rig_server.rig(**overrides))
    return err.value


def test_unknown_host_key_is_refused_with_how_to_trust(ssh_server: Callable[..., SshServer],
                                                        tmp_path: Path) -> None:
    server = ssh_server()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    for known_hosts in (empty, tmp_path / "absent"):
        err = connect_error(server, known_hosts=str(known_hosts))
        assert err.reason == "host-key"
        assert server.fingerprint in err.detail
        assert f"ssh-keyscan -H -p {server.port} {server.addr} >> {known_hosts}" in err.detail
    assert empty.read_text() == ""  # never auto-added
    trust = err.detail.rpartition("then trust it: ")[2]  # the operator's next step, run as given
    subprocess.run(["sh", "-c", trust], check=True, capture_output=True, timeout=30)
    assert "|1|" in (tmp_path / "absent").read_text()  # hashed (-H): the file does not list the rig's address
    SshTransport(server.rig(known_hosts=str(tmp_path / "absent"))).close()


def test_changed_host_key_is_refused(ssh_server: Callable[..., SshServer], tmp_path: Path) -> None:
    server = ssh_server()
    other = keygen(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(f"{server.known_hosts_host} {other}\n")
    err = connect_error(server, known_hosts=str(known))
    assert err.reason == "host-key"
    assert "CHANGED" in err.detail and server.fingerprint in err.detail
    assert known.read_text() == f"{server.known_hosts_host} {other}\n"


def test_wrong_key_is_an_auth_error(ssh_server: Callable[..., SshServer], tmp_path: Path) -> None:
    server = ssh_server()
    keygen(tmp_path / "stranger")
    assert connect_error(server, identity_file=str(tmp_path / "stranger")).reason == "auth"
    assert connect_error(server, identity_file=str(tmp_path / "absent")).reason == "auth"


def test_refused_connection_is_unreachable_at_once(ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server()
    start = time.monotonic()
    err = connect_error(server, port=free_port(server.addr))
    assert err.reason == "unreachable"
    assert time.monotonic() - start < 1


def test_silent_listener_is_unreachable_within_the_timeout(ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server()
    with socket.socket() as silent:
        silent.bind((server.addr, 0))
        silent.listen()
        start = time.monotonic()
        err = connect_error(server, port=silent.getsockname()[1], connect_timeout_s=0.5)
    assert err.reason == "unreachable"
    assert time.monotonic() - start < 2


def test_rig_death_and_return(ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server()
    transport = SshTransport(server.rig(connect_timeout_s=1))
    proc = transport.start([PY, "-u", "-c", ECHO_UPPER])
    proc.send_line("x")
    assert proc.read_line(10) == "X"
    transport.put_bytes(b"before", "f.txt")
    server.kill()
    assert not server.processes()
    with pytest.raises(TransportError) as err:
        proc.read_line(5)
    assert err.value.reason == "lost"
    with pytest.raises(TransportError) as err:
        transport.run(["true"], timeout=5)
    assert err.value.reason == "unreachable"
    server.start()  # the rig reboots: same address, port and host key
    assert transport.run(["echo", "back"], timeout=5).stdout == "back\n"
    transport.put_bytes(b"again", "f.txt")
    assert transport.get_bytes("f.txt") == b"again"
    transport.close()


def test_sshd_stop_leaves_running_workers_alone(ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server()
    transport = SshTransport(server.rig())
    proc = transport.start([PY, "-u", "-c", ECHO_UPPER])
    server.stop()
    proc.send_line("still")
    assert proc.read_line(10) == "STILL"
    with pytest.raises(TransportError):
        SshTransport(server.rig())
    proc.kill()
    transport.close()


def test_more_channels_than_max_sessions_open_more_connections(ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server(max_sessions=2)
    transport = SshTransport(server.rig(slots=3))
    procs = [transport.start([PY, "-u", "-c", ECHO_UPPER]) for _ in range(3)]
    transport.put_bytes(b"ok", "f.txt")
    for i, proc in enumerate(procs):
        proc.send_line(f"p{i}")
        assert proc.read_line(10) == f"P{i}"
    assert transport.get_bytes("f.txt") == b"ok"
    assert transport.run(["true"], timeout=10).returncode == 0
    for proc in procs:
        proc.kill()
    assert wait_for(lambda: not server.processes(), 3)
    transport.close()
