"""Code and data push, on both transports."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.deploy import DeployError, deploy, worker_bundle
from coordinator.transport import Transport
from worker.contract import code_hash


@pytest.fixture
def bundle(tmp_path: Path) -> dict[str, Path]:
    files = {"code/worker/__init__.py": "VERSION = 1\n", "code/worker/run.py": "print('run')\n",
             "data/survivors.json": "[1, 2, 3]\n"}
    for rel, text in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    return {rel: tmp_path / "src" / rel for rel in files}


def rig_file(transport: Transport, rel: str) -> Path:
    return Path(os.path.expanduser(transport.rig.workdir)) / rel


def test_deploy_pushes_then_skips_then_repairs(transport: Transport, bundle: dict[str, Path]) -> None:
    first = deploy(transport, bundle)
    assert sorted(first.pushed) == sorted(bundle) and first.skipped == 0
    assert first.bytes_pushed == sum(p.stat().st_size for p in bundle.values())
    for rel, local in bundle.items():
        assert rig_file(transport, rel).read_bytes() == local.read_bytes()

    second = deploy(transport, bundle)
    assert second.pushed == () and second.skipped == len(bundle) and second.bytes_pushed == 0

    rig_file(transport, "code/worker/run.py").write_text("print('tampered')\n")
    third = deploy(transport, bundle)
    assert third.pushed == ("code/worker/run.py",) and third.skipped == len(bundle) - 1
    assert rig_file(transport, "code/worker/run.py").read_bytes() == bundle["code/worker/run.py"].read_bytes()


def test_deploy_removes_stale_code_but_not_data(transport: Transport, bundle: dict[str, Path]) -> None:
    deploy(transport, bundle)
    for rel in ("code/worker/old.py", "code/worker/__pycache__/run.cpython-311.pyc", "data/other.json"):
        transport.put_bytes(b"old", rel)
    report = deploy(transport, bundle)
    assert report.removed == ("code/worker/old.py",) and report.pushed == ()
    assert not rig_file(transport, "code/worker/old.py").exists()
    assert rig_file(transport, "code/worker/__pycache__/run.cpython-311.pyc").exists()
    assert rig_file(transport, "data/other.json").exists()
    data_only = {k: v for k, v in bundle.items() if k.startswith("data/")}
    assert deploy(transport, data_only).removed == ()  # a data-only push never empties code/


def test_deployed_worker_has_the_heads_code_hash(transport: Transport, tmp_path: Path) -> None:
    snapshot = tmp_path / "worker"  # the package may change under us while the test runs
    for rel, local in worker_bundle().items():
        (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, snapshot / rel)
    package = snapshot / "code/worker"
    deploy(transport, worker_bundle(package))
    script = "from pathlib import Path; from worker.contract import code_hash; print(code_hash(Path('code/worker')))"
    done = transport.run([transport.rig.python, "-c", script], timeout=60, env={"PYTHONPATH": "code"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == code_hash(package)


class Corrupting:
    """A transport whose uploads arrive damaged: what deploy's verification is for."""

    def __init__(self, inner: Transport):
        self.inner, self.rig = inner, inner.rig
        self.run, self.get_bytes = inner.run, inner.get_bytes

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        self.inner.put_bytes(data + b"#", path, mode)


def test_deploy_detects_a_bad_push(transport: Transport, bundle: dict[str, Path]) -> None:
    with pytest.raises(DeployError, match=r"rig '\w+': code/worker/__init__.py has sha256"):
        deploy(Corrupting(transport), bundle)  # type: ignore[arg-type]


def test_deploy_without_python_on_the_rig(make_transport: Callable[..., Transport], bundle: dict[str, Path]) -> None:
    transport = make_transport(python="/nonexistent/python")
    with pytest.raises(DeployError, match="cannot list its files"):
        deploy(transport, bundle)
