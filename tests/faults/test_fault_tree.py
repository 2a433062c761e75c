"""The rig's warm process tree under faults: a slot server killed between or during trials, the rig's
server killed, forks that fail. An attempt a fault takes with it is recorded and retried; a slot server
comes back forked from the same rig server (no second warm-up), the rig's server comes back once for all
of its slots; nothing is lost or counted twice."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from coordinator.dataset import load_data_dir
from coordinator.deploy import deploy, worker_bundle
from coordinator.rig_server import RigServer
from coordinator.scheduler import Task
from coordinator.settings import RunSettings
from coordinator.slots import WarmSlot
from coordinator.transport.ssh import SshTransport
from tests.faults.helpers import SAMPLE_SIZE, WAIT_S, Cluster, FaultSummary, failures_on, rig_tree
from tests.faults.hooks.faulty_worker import HOLD_GO
from tests.sshd import _stat, wait_for
from worker import contract
from worker.contract import Evaluation
from worker.params import SEARCH_SPACE, Choice

TRIALS = 6
PARAMS = {k: d.options[0] if isinstance(d, Choice) else d.low for k, d in SEARCH_SPACE.items()}


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or (_stat(pid) or ("Z",))[0] == "Z"


def test_slot_server_killed_between_trials_fails_no_trial(cluster: Cluster) -> None:
    """The rig's one slot is idle (another rig holds the last trial) when its slot server is killed: the
    slot forks a new one from the same rig server when it next needs one, and no trial fails for it. The
    held trial then crashes, its rig is left out, and its retry runs on the new slot server."""
    cluster.drop_head()
    tree = cluster.ssh_rig("tree")
    cluster.ssh_rig("other", "hold")
    cluster.barrier("tree", "other")
    run = cluster.step2(3, "--quarantine-after", "1")
    held, _, _ = cluster.hit("other", "hold")
    assert wait_for(lambda: run.output.count("finished tree/") == 2, WAIT_S), run.output  # then nothing is left
    rig_server, (slot_server,) = rig_tree(tree)
    os.kill(slot_server, signal.SIGKILL)
    assert wait_for(lambda: rig_tree(tree) == (rig_server, []), 10)  # reaped by the rig server, which said so
    (cluster.workdir("other") / HOLD_GO).touch()
    cluster.finish(run)
    trials = cluster.check(3)
    assert [f["rig"] for f in trials[held].attrs["failures"]] == ["other"] and trials[held].attrs["rig"] == "tree"
    assert not failures_on(trials, "tree")
    assert cluster.warm_ups("tree") == 1  # the new slot server came from the same rig server


def test_slot_server_killed_during_a_trial(cluster: Cluster) -> None:
    """SIGKILL to the slot server running a trial: the trial dies with it, the attempt is lost and retried on
    the head. The slot's next fork fails (a process limit): that attempt is lost too, and retried. The fork
    after that comes from the same rig server, and serves on."""
    cluster.ssh_rig("tree", "hang")
    cluster.instrument("tree", STEP2_FAULT_FORK="slot@2")
    cluster.barrier("tree")
    run = cluster.step2(TRIALS)
    number, _, trial = cluster.hit("tree", "hang")
    parent = _stat(trial)
    assert parent is not None
    os.kill(parent[1], signal.SIGKILL)  # the trial's parent: its slot server
    cluster.finish(run)
    trials = cluster.check(TRIALS)
    failed = failures_on(trials, "tree")
    assert [(f["reason"], f["detail"]) for f in failed.pop(number)] == [
        ("lost", "the slot server exited with status -9")]
    ((refused, (failure,)),) = failed.items()
    assert failure["reason"] == "lost" and "cannot fork the slot server: [Errno 11]" in failure["detail"]
    assert trials[number].attrs["rig"] == trials[refused].attrs["rig"] == "head"
    assert any(t.attrs["rig"] == "tree" for t in trials.values()), "the slot never served again"
    assert cluster.warm_ups("tree") == 1 and gone(trial)


def test_rig_server_killed_restarts_the_rigs_slots(cluster: Cluster) -> None:
    """SIGKILL to the rig's server while both its slots run a trial: everything under it dies with it, both
    attempts are lost and retried on the head, and the rig's next attempts start one new rig server for
    both slots."""
    tree = cluster.ssh_rig("tree", "hang", "hold", slots=2)
    cluster.barrier("tree")
    run = cluster.step2(TRIALS + 2)
    (hung, _, first), (held, _, second) = cluster.hit("tree", "hang"), cluster.hit("tree", "hold")
    rig_server, slot_servers = rig_tree(tree)
    assert rig_server is not None and len(slot_servers) == 2
    os.kill(rig_server, signal.SIGKILL)
    assert wait_for(lambda: all(gone(pid) for pid in (first, second, *slot_servers)), 10), "the tree outlived its root"
    cluster.finish(run)
    trials = cluster.check(TRIALS + 2)
    failed = failures_on(trials, "tree")
    assert set(failed) == {hung, held}
    assert all(f["reason"] == "lost" and "the rig's server ended" in f["detail"] for fs in failed.values() for f in fs)
    assert trials[hung].attrs["rig"] == trials[held].attrs["rig"] == "head"
    assert any(t.attrs["rig"] == "tree" for t in trials.values()), "the rig never served again"
    assert cluster.warm_ups("tree") == 2  # one new rig server, not one per slot


def test_a_trial_fork_that_fails_fails_only_its_attempt(cluster: Cluster) -> None:
    """The slot server cannot fork a process for its first trial (ahead, then when the job came): that
    attempt fails saying so, and is retried on the head; the same slot server serves the rig's next trials."""
    cluster.ssh_rig("tree")
    cluster.instrument("tree", STEP2_FAULT_FORK="trial@1,trial@2")
    cluster.barrier("tree")
    cluster.run(TRIALS)
    trials = cluster.check(TRIALS)
    ((number, (failure,)),) = failures_on(trials, "tree").items()
    assert failure["reason"] == "missing" and failure["attempt"] == 1
    assert "cannot fork the trial's process: [Errno 11] Resource temporarily unavailable" in failure["detail"]
    assert trials[number].attrs["rig"] == "head"
    assert any(t.attrs["rig"] == "tree" for t in trials.values()), "the slot never served again"


def test_rig_server_killed_between_trials_fails_no_trial(cluster: Cluster, data: Path, faults_summary: FaultSummary,
                                                        request: pytest.FixtureRequest) -> None:
    """Both slots of a rig idle when its server is killed: once the head has seen its channel close, each
    slot's next attempt starts the server again (once for both) and succeeds; no attempt fails."""
    server = cluster.ssh_rig("tree", slots=2)
    cluster.instrument("tree")
    transport = SshTransport(cluster.rig("tree"))
    dataset = load_data_dir(data)
    deploy(transport, {**worker_bundle(), **{ref.path: dataset.files[role] for role, ref in dataset.refs.items()}})
    settings = RunSettings("t", "r-tree", contract.code_hash(), dataset.prng_type, dataset.mod, SAMPLE_SIZE, 60.0,
                           dataset.refs, Evaluation(1, SAMPLE_SIZE, 20, "spearman_rho"))
    rig = RigServer(transport, settings.code_hash, settings.data)
    slots = [WarmSlot(rig, i, lambda task: settings.job(task.payload, PARAMS, task.attempt)) for i in range(2)]
    try:
        for slot in slots:
            slot.start()
        outcomes = [slot.execute(Task(contract.trial_id(i), i)) for i, slot in enumerate(slots)]
        rig_server, _ = rig_tree(server)
        assert rig_server is not None
        os.kill(rig_server, signal.SIGKILL)
        assert wait_for(lambda: all(slot.proc and slot.proc.wait(0) is not None for slot in slots), 10)
        outcomes += [slot.execute(Task(contract.trial_id(2 + i), 2 + i)) for i, slot in enumerate(slots)]
        assert [o.ok for o in outcomes] == [True] * 4, [o.describe() for o in outcomes]
        assert cluster.warm_ups("tree") == 2
    finally:
        for slot in slots:
            slot.close()
        rig.close()
        transport.close()
    assert wait_for(lambda: not server.processes(), 10), "closing the rig left processes on it"
    faults_summary.report(request.node.nodeid, cluster.root, 0)
