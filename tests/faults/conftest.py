"""Fixtures of the fault suite, and its summary line: `faults: scenarios=.. trials=.. lost=.. double=..`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import (
    MATRIX_RIGS,
    MATRIX_TIMEOUT_S,
    MATRIX_TRIALS,
    STUDY,
    WAIT_S,
    Cluster,
    FaultSummary,
    Matrix,
    cluster_at,
)
from tests.faults.hooks.faulty_worker import LATE_GO
from tests.sshd import wait_for
from worker.contract import trial_id
from worker.demo import write_uniform

_SUMMARY = pytest.StashKey[FaultSummary]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every scenario runs sshds (a Cluster skips without OpenSSH): each test here is an `ssh` test, so
    `-m "not ssh"` deselects exactly them. (The hook sees the whole session's items: only ours are marked.)"""
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path.resolve().is_relative_to(here):
            item.add_marker(pytest.mark.ssh)


@pytest.fixture(scope="session")
def faults_summary(request: pytest.FixtureRequest) -> FaultSummary:
    """The collector every scenario reports its trials to (printed at the end of the session)."""
    return request.config.stash.setdefault(_SUMMARY, FaultSummary())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    summary = config.stash.get(_SUMMARY, None)
    if summary is not None:
        terminalreporter.write_line(summary.line())


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small uniform data (the faults need valid files, not signal): a trial takes a fraction of a second."""
    out = tmp_path_factory.mktemp("data")
    write_uniform(out, n_survivors=1500, n_train=1200, n_holdout=300, seed=11)
    return out


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, data: Path,
            faults_summary: FaultSummary) -> Iterator[Cluster]:
    """A scenario's head folder with a local head rig; `cluster.ssh_rig(...)` adds rigs behind real sshds.
    Everything it started is killed at teardown."""
    with cluster_at(tmp_path / "head", data, faults_summary, request.node.nodeid) as world:
        yield world


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory, data: Path, faults_summary: FaultSummary) -> Iterator[Matrix]:
    """The head and two faulty rigs, run once for every worker-fault scenario: three worker starts
    instead of twelve. A faulty rig has a slot per fault and every slot takes its first trial at once
    (a barrier), so each fault meets a first attempt however fast the head works through the study;
    each retry goes to the head (quarantine is held off meanwhile)."""
    with cluster_at(tmp_path_factory.mktemp("matrix") / "head", data, faults_summary, "matrix") as world:
        for rig, faults in MATRIX_RIGS.items():
            world.ssh_rig(rig, *faults, slots=len(faults))
        world.barrier(*MATRIX_RIGS)
        run = world.step2(MATRIX_TRIALS, "--quarantine-after", "10", timeout_s=MATRIX_TIMEOUT_S,
                          umask=0)  # modes must not rest on the caller's umask

        run.wait_line("retried stuck/slot0")  # the stopped trial hit its time limit: it must be gone by now
        hung_gone = not Path(f"/proc/{world.hit('stuck', 'hang')[2]}").exists() and bool(
            world.servers["stuck"].processes())

        tid = trial_id(world.hit("crash", "late")[0])
        assert wait_for((world.root / "runs" / STUDY / "trials" / f"{tid}.json").exists, WAIT_S)  # retry told
        (world.workdir("crash") / LATE_GO).touch()
        late = world.workdir("crash") / "results"
        assert wait_for(lambda: list(late.glob(f"*/*/{tid}.a1.json")), WAIT_S), "the late result never arrived"

        output = world.finish(run)
        yield Matrix(world, output, hung_gone, next(late.glob(f"*/*/{tid}.a1.json")))
