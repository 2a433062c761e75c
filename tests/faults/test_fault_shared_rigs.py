"""Two studies at once on the same rigs (the head and two SSH rigs), on different data whose files have the
same names: neither touches the other's data, jobs or results, and both complete without a failed attempt.
Each run's slots hold their first "ready" until a slot of the other run is ready, so the runs overlap however
slowly the machine starts the second."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.helpers import Cluster, Run
from worker.demo import write_uniform

TRIALS = 12


def span(run: Run, first: str, last: str) -> tuple[float, float]:
    """When (seconds on the test's clock) the run's first line holding `first` and its last holding `last` came."""
    starts = [at for at, line in run.lines if first in line]
    ends = [at for at, line in run.lines if last in line]
    return run.started + starts[0], run.started + ends[-1]


def test_two_studies_on_the_same_rigs_keep_to_their_own_files(cluster: Cluster, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    other = tmp_path / "other"
    write_uniform(other, n_survivors=1500, n_train=1200, n_holdout=300, seed=12)  # same names, other data
    cluster.ssh_rig("r1")
    cluster.ssh_rig("r2")
    marks = {study: tmp_path / f"ready-{study}" for study in ("first", "second")}
    for mark in marks.values():
        mark.mkdir()
    runs = {}
    for study, rival, data in (("first", "second", None), ("second", "first", other)):
        for rig in list(cluster.rigs):
            cluster.instrument(rig.name, STEP2_FAULT_MEET=f"{marks[study]}:{marks[rival]}")
        runs[study] = cluster.step2(TRIALS, "--output", f"{study}.json", study=study, data=data,
                                    rigs=f"rigs-{study}.toml")  # each run reads its own inventory
    first, second = runs["first"], runs["second"]
    cluster.finish(first)
    cluster.finish(second)

    for study in ("first", "second"):
        trials = cluster.check(TRIALS, f"{request.node.nodeid}[{study}]", study=study, config=f"{study}.json")
        assert all(t.state == "COMPLETE" and not t.attrs["failures"] for t in trials.values()), study
    assert all(any(mark.iterdir()) for mark in marks.values()), "a run's slots never met the other's"
    (a_start, a_end), (b_start, b_end) = (span(run, " started ", " finished ") for run in (first, second))
    assert max(a_start, b_start) < min(a_end, b_end), "the two runs never overlapped"
    deployed = [{line.split()[1].rstrip(":") for _, line in run.lines if line.startswith("deploy ")}
                for run in (first, second)]  # (a loaded machine may leave an SSH rig out of one run)
    assert "head" in deployed[0] & deployed[1]
    for rig in cluster.rigs:  # a rig holds each study's data that used it, each file in its content's folder
        workdir = cluster.workdir(rig.name)
        assert len(list(workdir.glob("data/*/*"))) == 3 * sum(rig.name in d for d in deployed), rig.name
        for folder in ("jobs", "results", "logs"):  # and each study's attempts in a folder of its own
            assert {p.name for p in (workdir / folder).glob("*")} <= {"first", "second"}, (rig.name, folder)
