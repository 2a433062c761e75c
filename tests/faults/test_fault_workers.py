"""Workers that fail on a rig (one shared run: each rig's attempts meet its faults in turn): each failed
attempt is recorded with its reason, the trial is retried on the head, and nothing is lost or counted twice."""

from __future__ import annotations

import json

import pytest

from tests.faults.helpers import MATRIX_RIGS, MATRIX_TIMEOUT_S, MATRIX_TRIALS, STUDY, Cluster, Matrix
from tests.faults.hooks.faulty_worker import STALE_ACCURACY
from worker.contract import trial_id


def faulted_trial(matrix: Matrix, fault: str, scenario: str) -> dict:
    """The trial the fault hit, checked: its first attempt failed on the fault's rig, its retry completed
    on the head; the whole study consistent. Returns the failure recorded for the first attempt."""
    trials = matrix.cluster.check(MATRIX_TRIALS, scenario)
    rig = next(name for name, faults in MATRIX_RIGS.items() if fault in faults)
    number, attempt, _ = matrix.cluster.hit(rig, fault)
    trial = trials[number]
    assert attempt == 1 and trial.state == "COMPLETE" and trial.attrs["attempts"] == 2
    assert trial.attrs["rig"] == "head"
    (failure,) = trial.attrs["failures"]
    assert failure["rig"] == rig and failure["attempt"] == 1
    archived = matrix.cluster.root / "runs" / STUDY / "trials" / f"{trial_id(number)}.a1.json"
    assert json.loads(archived.read_text())["status"] == "error"
    return failure


@pytest.mark.parametrize("fault, reason, detail", [
    ("exit", "missing", "(worker exit 3)"),
    ("sigkill", "missing", "(worker exit -9)"),  # as the OOM killer does
    ("truncate", "corrupt", "not valid JSON"),
    ("stale", "invalid", "field 'run_id': is 'r-earlier-run'"),
    ("hang", "timeout", f"over the {MATRIX_TIMEOUT_S:g} s limit; killed on the rig"),
    ("late", "timeout", f"over the {MATRIX_TIMEOUT_S:g} s limit; killed on the rig"),
])
def test_failed_attempt_is_recorded_and_retried_on_the_head(matrix: Matrix, request: pytest.FixtureRequest,
                                                            fault: str, reason: str, detail: str) -> None:
    failure = faulted_trial(matrix, fault, request.node.nodeid)
    assert failure["reason"] == reason and detail in failure["detail"]


def test_stale_result_is_never_collected(matrix: Matrix, request: pytest.FixtureRequest) -> None:
    faulted_trial(matrix, "stale", request.node.nodeid)
    finals = (matrix.cluster.root / "runs" / STUDY / "trials").glob("*.json")
    assert all(json.loads(p.read_text())["accuracy"] != STALE_ACCURACY for p in finals)
    assert f"accuracy={STALE_ACCURACY}" not in matrix.output


def test_hung_trial_is_killed_at_its_time_limit(matrix: Matrix, request: pytest.FixtureRequest) -> None:
    faulted_trial(matrix, "hang", request.node.nodeid)
    assert matrix.hung_pid_gone_in_time, "the stopped trial outlived its time limit (or its worker died)"


def test_late_result_after_its_retry_is_recorded_once(matrix: Matrix, request: pytest.FixtureRequest) -> None:
    """The original attempt's success lands on its rig after the retry was told: the study keeps the
    retry's value once, the archive keeps attempt 1 as the failure the coordinator saw."""
    faulted_trial(matrix, "late", request.node.nodeid)
    late = json.loads(matrix.late_result.read_text())
    assert late["status"] == "success" and late["attempt"] == 1
    tid = late["trial_id"]
    trials_dir = matrix.cluster.root / "runs" / STUDY / "trials"
    final = json.loads((trials_dir / f"{tid}.json").read_text())
    assert final["attempt"] == 2 and final["accuracy"] == late["accuracy"]  # a retry reproduces its trial
    assert "recorded by the coordinator" in json.loads((trials_dir / f"{tid}.a1.json").read_text())["error"]


def test_trial_out_of_attempts_ends_fail_with_its_reason(cluster: Cluster) -> None:
    """With one attempt allowed, a crashed trial is told FAIL with why (never a value), the others complete,
    the optimal config comes from them, and the run says it failed."""
    cluster.instrument("head", STEP2_FAULT="exit")
    out = cluster.run(3, "--attempts", "1", expect=1)
    trials = cluster.check(3)
    number, _, _ = cluster.hit("head", "exit")
    assert trials[number].state == "FAIL" and trials[number].value is None
    assert trials[number].attrs["fail_reason"].startswith("attempt 1 on head: missing: no result file")
    assert [t.state for n, t in trials.items() if n != number] == ["COMPLETE", "COMPLETE"]
    assert "complete=2 failed=1" in out
