"""What the shared worker-fault run leaves behind is safe: no job, result or study file anyone may
write (the coordinator ran under umask 000, so only modes the code sets count), and no key material in
the coordinator's output or any log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.helpers import CONFIG, MATRIX_TRIALS, Matrix


def test_job_result_and_study_files_are_not_world_writable(matrix: Matrix, request: pytest.FixtureRequest) -> None:
    world = matrix.cluster
    world.check(MATRIX_TRIALS, request.node.nodeid)
    files = [world.root / CONFIG, *world.root.glob("optuna_studies/*"), *world.root.glob("jobs/**/*"),
             *world.root.glob("runs/**/*")]
    for rig in world.rigs:
        files += [p for folder in ("jobs", "results", "logs") for p in world.workdir(rig.name).glob(f"{folder}/**/*")]
    assert len(files) > 3 * MATRIX_TRIALS
    assert [str(p) for p in files if p.stat().st_mode & 0o002] == []


def _key_body(path: Path) -> list[str]:
    """The base64 lines of a private key file."""
    return [line for line in path.read_text().splitlines() if line and "PRIVATE KEY" not in line]


def test_no_key_material_in_output_or_logs(matrix: Matrix, request: pytest.FixtureRequest) -> None:
    world = matrix.cluster
    world.check(MATRIX_TRIALS, request.node.nodeid)
    texts = {"coordinator output": matrix.output}
    for server in world.servers.values():
        texts[str(server.log)] = server.log.read_text()
    for rig in world.rigs:
        for path in world.workdir(rig.name).glob("logs/**/*.log"):
            texts[str(path)] = path.read_text()
    body = [line for server in world.servers.values() for line in _key_body(server.client_key)]
    assert len(texts) > MATRIX_TRIALS and body
    for where, text in texts.items():
        assert "PRIVATE KEY" not in text, where
        assert not [line for line in body if line in text], where
