"""The coordinator is SIGKILLed mid-run, then resumed: the study completes and no trial runs twice."""

from __future__ import annotations

import json
from collections import Counter

from tests.faults.helpers import STUDY, WAIT_S, Cluster
from tests.sshd import wait_for
from worker.contract import trial_id

TRIALS = 8


def successes(cluster: Cluster) -> Counter[str]:
    """trial_id -> how many successful result files the head and the rigs hold for it, over every run
    and attempt: more than one means the trial ran to completion twice."""
    found: Counter[str] = Counter()
    for rig in cluster.rigs:
        for path in (cluster.workdir(rig.name) / "results").glob("*/*/trial_*.json"):
            if json.loads(path.read_text())["status"] == "success":
                found[path.name.split(".")[0]] += 1
    return found


def test_resume_after_sigkill_runs_no_trial_twice(cluster: Cluster) -> None:
    """The rig's first trial outlives the coordinator (the worker's `late` fault: its result lands once
    the head is down), so the resumed run must collect it rather than run it again."""
    cluster.ssh_rig("r1", "late")
    cluster.barrier("r1")
    run = cluster.step2(TRIALS, timeout_s=60)
    archive = cluster.root / "runs" / STUDY / "trials"
    number = cluster.hit("r1", "late")[0]
    assert wait_for(lambda: len(list(archive.glob("trial_????.json"))) >= 2, WAIT_S)
    run.kill()
    (cluster.workdir("r1") / "faults" / "go").touch()  # the orphaned attempt finishes while the head is down
    assert wait_for(lambda: not cluster.leftovers(), 30), "workers outlived their coordinator"
    before = {p.name: p.read_bytes() for p in archive.glob("trial_????.json")}
    late = trial_id(number)
    assert f"{late}.json" not in before

    out = cluster.finish(cluster.coordinator("step2", "--rigs", "rigs.toml", "--resume", STUDY, "--no-tui"))
    trials = cluster.check(TRIALS)
    assert f"resume: {late} re-attached from r1" in out
    assert trials[number].attrs["reattached"] is True
    assert all(t.state == "COMPLETE" for t in trials.values())
    assert {name: (archive / name).read_bytes() for name in before} == before  # finished trials kept as they were
    assert set(successes(cluster).values()) == {1} and len(successes(cluster)) == TRIALS
