"""Shared fixtures: real OpenSSH servers on loopback (tests/sshd.py) and transports to them."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from coordinator.inventory import Rig
from coordinator.transport import Transport
from coordinator.transport.local import LocalTransport
from coordinator.transport.ssh import SshTransport
from tests.sshd import SSHD, SshServer, next_address
from worker import demo


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts an sshd is an `ssh` test, so `-m "not ssh"` deselects exactly those."""
    for item in items:
        if "ssh_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ssh)


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Step 1's output folder for the small sieve-made demo (about 1,000 survivors, 2,000 train and 500
    holdout draws, java_lcg mod 1000), made once per session: copy it before changing it."""
    out = tmp_path_factory.mktemp("small_demo")
    demo.write(demo.make("small", seed=1), out)
    return out


@pytest.fixture(scope="session")
def small_null(tmp_path_factory: pytest.TempPathFactory, small_demo: Path) -> Path:
    """The small demo's null variant: the same survivors, uniform draws."""
    out = tmp_path_factory.mktemp("small_null")
    demo.write(demo.make("small", seed=1), out, null=True)
    return out


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[Callable[..., SshServer]]:
    """A factory: `server = ssh_server()` starts an sshd on a fresh 127.0.0.x and returns it
    (`ssh_server(max_sessions=2)` passes options on); `server.rig("name")` is a Rig pointing at it.
    Every server, and everything its sessions started, is SIGKILLed at teardown."""
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip(f"OpenSSH server not installed ({SSHD}, ssh-keygen): apt-get install openssh-server")
    servers: list[SshServer] = []

    def start(max_sessions: int = 10) -> SshServer:
        server = SshServer(next_address(), tmp_path / f"sshd{len(servers)}", max_sessions)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.ssh)])
def make_transport(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Transport]]:
    """Run a test on both transports: `make_transport(**rig_fields)` opens a LocalTransport, or an
    SshTransport to a loopback sshd, for a rig whose workdir is a fresh temp folder by default."""
    server = request.getfixturevalue("ssh_server")() if request.param == "ssh" else None
    opened: list[Transport] = []

    def make(**overrides: object) -> Transport:
        fields = {"workdir": str(tmp_path / f"rig{len(opened)}"), **overrides}
        if server is None:
            rig = Rig(name="head", python=sys.executable, workdir="", slots=1, local=True)
            transport: Transport = LocalTransport(replace(rig, **fields))
        else:
            transport = SshTransport(server.rig("rig", **fields))
        opened.append(transport)
        return transport

    yield make
    for transport in opened:
        transport.close()


@pytest.fixture
def transport(make_transport: Callable[..., Transport]) -> Transport:
    """A transport to a rig with a fresh workdir, once local and once over SSH."""
    return make_transport()


@pytest.fixture
def home_dir() -> Iterator[str]:
    """A fresh `~/...` folder name (for workdirs relative to the home directory), removed afterwards."""
    name = f".step2-test-{uuid.uuid4().hex[:8]}"
    yield f"~/{name}"
    shutil.rmtree(Path(os.path.expanduser("~")) / name, ignore_errors=True)
