"""Rigs that cannot be used at the start of a run (one shared run, one rig per way to fail): each is
left out with its reason, nothing is trusted or typed on anyone's behalf, and the run completes on the
head. Transport-level details of each error are tested in tests/test_transport.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.helpers import PY, Cluster, FaultSummary, cluster_at
from tests.sshd import free_port, keygen

TRIALS = 3
SILENT_TIMEOUT_S = 3.0
TYPED = b"hunter2\n"  # waiting in the coordinator's stdin, where a password prompt would read it
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


@dataclass
class Outcast:
    """The shared run: its cluster, output, what its stdin still held, and the files it must not change."""

    cluster: Cluster
    output: str
    stdin_left: bytes
    before: dict[Path, bytes | None]
    left_out_at: dict[str, float]  # seconds into the run when each rig was left out

    def line(self, rig: str) -> str:
        return next(line for line in self.output.splitlines() if line.startswith(f"rig {rig} left out"))


def _snapshot(paths: list[Path]) -> dict[Path, bytes | None]:
    return {p: p.read_bytes() if p.exists() else None for p in paths}


@pytest.fixture(scope="module")
def outcast(tmp_path_factory: pytest.TempPathFactory, data: Path, faults_summary: FaultSummary) -> Iterator[Outcast]:
    with cluster_at(tmp_path_factory.mktemp("outcast") / "head", data, faults_summary, "outcast") as world, \
            socket.socket() as silent:
        refused = world.ssh_rig("refused")
        world.retarget("refused", port=free_port(refused.addr))
        silent.bind((world.ssh_rig("silent").addr, 0))
        silent.listen()  # the kernel completes the handshake; nothing ever answers
        world.retarget("silent", port=silent.getsockname()[1], connect_timeout_s=SILENT_TIMEOUT_S)
        world.ssh_rig("unknown")
        (world.root / "empty_known_hosts").write_text("")
        world.retarget("unknown", known_hosts=str(world.root / "empty_known_hosts"))
        changed = world.ssh_rig("changed")
        impostor = keygen(world.root / "impostor")
        (world.root / "changed_known_hosts").write_text(f"{changed.known_hosts_host} {impostor}\n")
        world.retarget("changed", known_hosts=str(world.root / "changed_known_hosts"))
        world.ssh_rig("nokey")
        keygen(world.root / "stranger")
        world.retarget("nokey", identity_file=str(world.root / "stranger"))
        world.ssh_rig("notorch")
        world.retarget("notorch", python=str(python_without_torch(world.root)))

        before = _snapshot([USER_KNOWN_HOSTS, *(Path(r.known_hosts) for r in world.rigs if not r.local)])
        typed_r, typed_w = os.pipe()
        os.write(typed_w, TYPED)
        try:
            run = world.step2(TRIALS, stdin=typed_r)
            output = world.finish(run)
            os.set_blocking(typed_r, False)
            stdin_left = os.read(typed_r, 100)
        finally:
            os.close(typed_r)
            os.close(typed_w)
        left_out = {line.split()[1]: at for at, line in run.lines if " left out of the run: " in line}
        yield Outcast(world, output, stdin_left, before, left_out)


def python_without_torch(folder: Path) -> Path:
    """The test's python as a rig's venv that lacks torch (a package on its path that fails as a missing one)."""
    shim = folder / "notorch" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    python = folder / "python-notorch"
    python.write_text(f'#!/bin/sh\nexport PYTHONPATH={shim.parent}:"$PYTHONPATH"\nexec {PY} "$@"\n')
    python.chmod(0o755)
    return python


def left_out(outcast: Outcast, rig: str, scenario: str) -> str:
    """The rig's 'left out' line; the run is consistent and ran every trial on the head."""
    trials = outcast.cluster.check(TRIALS, scenario)
    assert all(t.state == "COMPLETE" and t.attrs["rig"] == "head" for t in trials.values())
    return outcast.line(rig)


def untouched(outcast: Outcast) -> bool:
    """No known_hosts file (the rigs' nor the user's) changed: no key was ever added on anyone's behalf."""
    return _snapshot(list(outcast.before)) == outcast.before


def test_refused_connection(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    assert "unreachable" in left_out(outcast, "refused", request.node.nodeid)
    assert "Connection refused" in outcast.line("refused")


def test_host_that_never_sends_a_banner(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    assert "unreachable" in left_out(outcast, "silent", request.node.nodeid)
    assert outcast.left_out_at["silent"] >= SILENT_TIMEOUT_S  # waited its connect timeout
    assert "Traceback" not in outcast.output  # one line says it all


def test_unknown_host_key_is_refused_with_how_to_trust_it(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    line = left_out(outcast, "unknown", request.node.nodeid)
    server, rig = outcast.cluster.servers["unknown"], outcast.cluster.rig("unknown")
    assert "host-key" in line and "never trusted automatically" in line and server.fingerprint in line
    assert f"ssh-keyscan -H -p {server.port} {server.addr} >> {rig.known_hosts}" in line
    assert untouched(outcast)


def test_changed_host_key_is_refused_with_how_to_trust_it(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    line = left_out(outcast, "changed", request.node.nodeid)
    server = outcast.cluster.servers["changed"]
    assert "host-key" in line and "CHANGED" in line and server.fingerprint in line
    assert f"ssh-keygen -R '{server.known_hosts_host}'" in line and "ssh-keyscan" in line
    assert untouched(outcast)


def test_no_usable_key_fails_fast_and_never_prompts(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    assert "auth" in left_out(outcast, "nokey", request.node.nodeid)
    assert outcast.left_out_at["nokey"] < outcast.left_out_at["silent"]  # before any connect timeout ran out
    assert outcast.stdin_left == TYPED  # nothing read the coordinator's stdin


def test_a_rig_without_torch_is_left_out_in_one_line(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    line = left_out(outcast, "notorch", request.node.nodeid)
    assert line.endswith("pre-flight check failed: cannot import torch (ModuleNotFoundError: No module named"
                         " 'torch')")
    assert "lost_slots=0" in outcast.output  # it never got as far as starting a slot


def test_the_summary_names_every_rig_left_out(outcast: Outcast, request: pytest.FixtureRequest) -> None:
    outcast.cluster.check(TRIALS, request.node.nodeid)
    out = {line.split()[1]: line for line in outcast.output.splitlines() if line.startswith("  rig ")}
    assert set(out) == {"refused", "silent", "unknown", "changed", "nokey", "notorch"}
    assert all(" out: " in line and "\n" not in line for line in out.values())
    assert "rigs_out=6" in outcast.output


def test_require_all_rigs_refuses_to_dispatch_without_every_rig(cluster: Cluster) -> None:
    closed = cluster.ssh_rig("closed")
    cluster.retarget("closed", port=free_port(closed.addr))
    cluster.assert_refused(cluster.step2(2, "--require-all-rigs"), "--require-all-rigs: rigs left out: closed:"
                           " unreachable: ", "Connection refused")
