"""Rigs that fail under a run: one that dies, one whose network drops while a result is being fetched,
one whose workdir fills up. Each failed attempt is retried on the head; nothing is lost or counted twice."""

from __future__ import annotations

from tests.faults.helpers import WAIT_S, Cluster, blocked_in_fifo_open, cut_connections, failures_on
from tests.sshd import wait_for

TRIALS = 8


def test_rig_that_dies_mid_trial_is_left_out(cluster: Cluster) -> None:
    server = cluster.ssh_rig("dies", "hang")  # a trial that waits for whatever comes
    cluster.barrier("dies")
    run = cluster.step2(TRIALS)
    number, _, _ = cluster.hit("dies", "hang")
    server.kill()  # sshd, its connections and the worker mid-trial: the rig loses power
    out = cluster.finish(run)
    trials = cluster.check(TRIALS)
    failed = failures_on(trials, "dies")
    assert failed[number][0]["reason"] == "lost"
    assert all(trials[n].state == "COMPLETE" and trials[n].attrs["rig"] == "head" for n in failed)
    assert "rig dies out: 3 failures in a row" in out and "Connection refused" in out


def test_network_drop_while_fetching_a_result(cluster: Cluster) -> None:
    """The rig's connections are cut while the head reads a result (the worker put it behind a FIFO, so
    the read is surely in flight): that attempt is retried on the head, and the rig reconnects for its
    next trial without failing it on the dead connection."""
    server = cluster.ssh_rig("drop", "drop")
    cluster.barrier("drop")
    run = cluster.step2(TRIALS)
    assert wait_for(lambda: blocked_in_fifo_open(server), WAIT_S)
    cut_connections(server)
    cluster.finish(run)
    trials = cluster.check(TRIALS)
    number, _, _ = cluster.hit("drop", "drop")
    failed = failures_on(trials, "drop")
    assert list(failed) == [number] and len(failed[number]) == 1, failed  # only the attempt being fetched
    assert failed[number][0]["reason"] == "lost" and "SFTP" in failed[number][0]["detail"]
    assert trials[number].attrs["rig"] == "head"
    assert any(t.attrs.get("rig") == "drop" for t in trials.values()), "the rig never came back"


def test_full_workdir_is_a_clear_failure(cluster: Cluster) -> None:
    """The rig's disk fills while a trial runs: that trial's result cannot be written, nor can the next
    job files (each travels in its request; the slot server writes it). Each failure says so, each trial
    is retried on the head, and the rig is left out."""
    cluster.ssh_rig("full", "fill")
    cluster.tmpfs(cluster.workdir("full"), "2m")
    cluster.barrier("full")
    out = cluster.run(TRIALS)
    trials = cluster.check(TRIALS)
    number, _, _ = cluster.hit("full", "fill")
    failed = failures_on(trials, "full")
    assert "No space left on device" in failed[number][0]["detail"]
    later = [f for n, failures in failed.items() if n != number for f in failures]
    assert later and all("cannot write the job file" in f["detail"] and "No space left on device" in f["detail"]
                         for f in later)
    assert all(trials[n].attrs["rig"] == "head" for n in failed)
    assert "rig full out: 3 failures in a row" in out
