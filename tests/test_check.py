"""`coordinator check` against real SSH rigs: each column is what it says it is. The code column looks at
the rig's code/worker only (a worker package the rig's python can import elsewhere must not count); rtt is a
round trip on an open channel, not a whole command; a failing rig's reason is printed whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from coordinator.deploy import deploy, worker_bundle
from coordinator.transport.ssh import SshTransport
from tests.faults.helpers import rigs_toml
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parent.parent


def check(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "coordinator.cli", "check", "--rigs", "rigs.toml", *args], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=240)


def test_check_reports_what_each_column_is(tmp_path: Path, ssh_server: Callable[..., SshServer]) -> None:
    rig = ssh_server().rig("rig", env={"PYTHONPATH": str(REPO)})  # a worker package the rig's python can import
    (tmp_path / "rigs.toml").write_text(rigs_toml([rig]))

    def row() -> dict:
        done = check(tmp_path, "--json")
        assert done.returncode == 0, done.stderr
        (found,) = json.loads(done.stdout)
        return found

    first = row()["details"]
    assert first["code"] == "none"  # an empty workdir, whatever the venv holds
    assert first["modules"].keys() == {"numpy", "scipy", "torch"} and all(first["modules"].values())
    assert 0 < first["rtt_ms"] < first["exec_ms"]  # a round trip costs far less than starting a command
    transport = SshTransport(rig)
    deploy(transport, worker_bundle())
    assert row()["details"]["code"] == "current"
    transport.put_bytes(b"# changed on the rig\n", "code/worker/params.py")
    transport.close()
    assert row()["details"]["code"] == "stale (1 files differ)"

    table = check(tmp_path)
    assert table.returncode == 0 and "rtt ms" in table.stdout and "exec ms" in table.stdout
    assert "rtt ms: a line's round trip on an open channel" in " ".join(table.stdout.split())


def test_a_failing_rig_has_its_whole_reason_on_one_line(tmp_path: Path, ssh_server: Callable[..., SshServer]) -> None:
    server = ssh_server()
    (tmp_path / "known_hosts").write_text("")
    rig = server.rig("stranger", known_hosts=str(tmp_path / "known_hosts"))
    (tmp_path / "rigs.toml").write_text(rigs_toml([rig]))
    done = check(tmp_path)
    assert done.returncode == 1
    (reason,) = [line for line in done.stdout.splitlines() if line.startswith("FAIL stranger: ")]
    assert f"ssh-keyscan -H -p {server.port} {server.addr} >> {tmp_path / 'known_hosts'}" in reason
