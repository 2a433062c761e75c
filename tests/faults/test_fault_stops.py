"""Runs that stop before their trials ran out, and their resume: a real `coordinator step2` sent SIGINT or
SIGTERM, and a run whose worker refuses a job (its data changed under it). Each ends with one clear
message, fails no trial, tells how to resume, and the resume completes the study."""

from __future__ import annotations

import signal

import pytest

from tests.faults.helpers import CONFIG, STUDY, Cluster
from worker.contract import trial_id

TRIALS = 16
RESUME = f"resume with: coordinator step2 --resume {STUDY}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_cleanly_and_resume_completes_it(cluster: Cluster, sig: signal.Signals) -> None:
    """r1's first trial hangs: the signal comes while it runs there and the head has finished some; the
    rig's attempt is stopped on the rig, nothing is counted as retried or failed, the last line says how to
    resume, and the resume re-runs what was running."""
    cluster.ssh_rig("r1", "hang")
    cluster.barrier("r1")
    run = cluster.step2(TRIALS)
    hung = cluster.hit("r1", "hang")[0]
    run.wait_line(" finished head/")
    run.proc.send_signal(sig)
    out = cluster.finish(run, expect=128 + sig)  # and nothing is left running on any rig
    lines = out.splitlines()

    assert "Traceback" not in out
    assert f"stopping: interrupted by {sig.name}" in out
    assert any(f"left r1/slot0 {trial_id(hung)} attempt 1 reason: cancelled" in line for line in lines)
    summary = next(line for line in lines if line.startswith(f"study {STUDY}: this run "))
    assert " failed=0 retried=0 " in summary and " unfinished=" in summary
    assert lines[-1] == RESUME and lines[-2] == f"stopped: interrupted by {sig.name}"
    assert not (cluster.root / CONFIG).exists()  # no optimum from an unfinished study

    out = cluster.finish(cluster.resume())
    trials = cluster.check(TRIALS)
    assert all(t.state == "COMPLETE" for t in trials.values())
    assert [f["reason"] for f in trials[hung].attrs["failures"]] == ["interrupted"]  # resume's own record


def test_a_refused_job_stops_dispatch_fails_nothing_and_resume_completes(cluster: Cluster) -> None:
    """The head's data file changes under it (the head is never quarantined: it used to fail every trial
    left, each in a second, for good). The first refusal stops the run; the resume pushes the data again."""
    cluster.instrument("head", STEP2_FAULT="corrupt")
    out = cluster.finish(cluster.step2(TRIALS), expect=1)
    number = cluster.hit("head", "corrupt")[0]
    stopping = [line for line in out.splitlines() if " stopping: " in line]
    assert len(stopping) == 1 and f"{trial_id(number)} attempt 1 on head: refused: " in stopping[0]
    assert "file hashes to" in stopping[0] and "no attempt can succeed until that is fixed" in stopping[0]
    assert out.splitlines()[-1] == RESUME
    assert " failed " not in out  # no trial was failed for it

    out = cluster.finish(cluster.resume())
    trials = cluster.check(TRIALS)
    assert all(t.state == "COMPLETE" for t in trials.values())
    assert trials[number].attrs["attempts"] == 2
    assert [f["reason"] for f in trials[number].attrs["failures"]] == ["refused"]


def test_a_resume_waits_for_the_coordinator_that_holds_the_study(cluster: Cluster) -> None:
    cluster.ssh_rig("r1", "hang")
    cluster.barrier("r1")
    run = cluster.step2(TRIALS)
    cluster.hit("r1", "hang")
    second = cluster.resume()
    assert second.finish() == 2
    assert f"study {STUDY} is in use by another coordinator (pid {run.proc.pid} on " in second.output
    run.proc.send_signal(signal.SIGINT)
    cluster.finish(run, expect=130)
