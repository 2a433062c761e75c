"""The rig's warm process tree on this machine, driven line by line as the coordinator drives it: one rig
server that pays the imports and parses the data, slot servers forked from it that share both, a child
per trial forked ahead as a spare, "done" as soon as the result is written, and nothing left running once
stdin closes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import protocol, rig_server, serve
from worker.bench import HEAVIEST, make_job
from worker.demo import write_uniform
from worker.files import write_json_atomic
from worker.protocol import RIG

REPO = Path(__file__).resolve().parent.parent
HOOKS = REPO / "tests" / "faults" / "hooks"
GPU_ENV = "HIP_VISIBLE_DEVICES"


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _memory(pid: int) -> dict[str, int]:
    """smaps_rollup in kB."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {line.split(":")[0]: int(line.split()[1]) for line in lines}


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Tree:
    """`python -m worker serve` (or the fault suite's faulty worker) in a work directory holding small data,
    which the head names for preloading first, as it does."""

    def __init__(self, root: Path, module: str = "worker", env: dict[str, str] | None = None):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", module, "serve", "--root", "."], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": f"{REPO}:{HOOKS}", GPU_ENV: "", **(env or {})})
        self.addresses = itertools.count()
        to, self.ready = self.read()
        assert to == RIG and self.ready["event"] == "ready", self.ready
        data = make_job(root, HEAVIEST).payload.data
        self.send(RIG, {"data": {role: {"path": ref.path, "sha256": ref.sha256} for role, ref in data.items()}})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> tuple[str, dict]:
        assert self.proc.stdout is not None
        to, message = protocol.split_address(self.proc.stdout.readline().decode().rstrip("\n"))
        return to, json.loads(message)

    def send(self, to: int | str, request: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(protocol.address(to, json.dumps(request)).encode() + b"\n")
        self.proc.stdin.flush()

    def open(self, index: int, gpu: str = "") -> tuple[int, dict]:
        """A new slot server for slot `index`: its address and its "ready"."""
        address = next(self.addresses)
        self.send(RIG, {"slot": address, "index": index, "env": {GPU_ENV: gpu}})
        to, ready = self.read()
        assert to == str(address) and ready["event"] == "ready", ready
        return address, ready

    def trial(self, address: int, number: int, timeout_s: float = 120.0) -> tuple[dict, dict | None]:
        """Run trial `number` on a slot server: its "done" and the result file (None if none was written)."""
        job = make_job(self.root, HEAVIEST, trial_number=number, sample_size=20)
        write_json_atomic(self.root / job.path, job.to_dict())
        self.send(address, {"job": job.path, "timeout_s": timeout_s, "log": f"logs/{job.trial_id}.log"})
        to, done = self.read()
        assert to == str(address), (to, done)
        result = self.root / job.result_path
        return done, json.loads(result.read_text()) if result.exists() else None

    def alive(self) -> list[int]:
        """Live processes of the tree (the rig server's session): every slot server's group is in it."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                fields = _stat(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[3]) == self.pid:
                found.append(int(entry.name))
        return found


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    write_uniform(tmp_path, n_survivors=60, n_train=2500, n_holdout=200)
    started = Tree(tmp_path)
    yield started
    for pid in started.alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    started.proc.wait()


def wait_for(done, limit: float = 10.0) -> bool:
    """Whether done() held once within `limit` (what it says at that moment: states here are transient)."""
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_trials_run_in_children_forked_ahead(tree: Tree):
    address, ready = tree.open(0)
    server = ready["pid"]
    assert wait_for(lambda: len(children(server)) == 1)  # idle: the first trial's child is already forked
    spare = children(server)[0]
    done, result = tree.trial(address, 0)
    assert done["event"] == "done" and done["exit"] == 0 and not done["timed_out"]
    assert result is not None and result["status"] == "success"
    assert json.loads(done["result"]) == result  # the file's text travels in the line: no fetch
    # the spare ran the trial and is gone; the next trial's child is already forked
    assert wait_for(lambda: len(children(server)) == 1 and spare not in children(server))
    done, result = tree.trial(address, 1)
    assert done["exit"] == 0 and result is not None and result["status"] == "success"


def test_slot_servers_share_the_rig_servers_imports_and_data(tree: Tree):
    """Forked, not started: each slot server is the rig server's child, holds the preloaded data, and
    keeps the imports' memory shared with it instead of a private copy of its own."""
    servers = [tree.open(index)[1] for index in range(2)]
    for ready in servers:
        assert int(_stat(ready["pid"])[1]) == tree.pid and ready["pgid"] == ready["pid"]  # its own group
        assert ready["data_files"] == 3 and ready["code_hash"] == tree.ready["code_hash"]
        memory = _memory(ready["pid"])
        assert memory["Rss"] > 200_000  # torch and the rest, mapped
        assert memory["Private_Dirty"] + memory["Private_Clean"] < 60_000, memory  # ... but not copied


def collapse_supported() -> bool:
    """Transparent huge pages not "never", and MADV_COLLAPSE (Linux 6.1)."""
    try:
        enabled = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return "[never]" not in enabled and (major, minor) >= (6, 1)


@pytest.mark.skipif(not collapse_supported(), reason="the kernel cannot collapse memory into huge pages")
def test_the_servers_hold_their_memory_in_huge_pages(tree: Tree):
    # most of the ~250 MB that importing torch leaves behind: fork and exit walk 512x fewer page entries.
    # A slot server maps the rig server's huge pages, less those its own writes have split since the fork.
    assert tree.ready["huge_pages_mib"] >= 100
    _, ready = tree.open(0)
    assert ready["huge_pages_mib"] >= 50
    assert _memory(ready["pid"])["AnonHugePages"] // 1024 >= 50


def test_each_slot_pins_its_own_gpu_for_its_trials(tmp_path: Path):
    """The one GPU variable, set per slot in its slot server, is what the trial's own process sees."""
    write_uniform(tmp_path, n_survivors=60, n_train=2500, n_holdout=200)
    tree = Tree(tmp_path, "faulty_worker", {"STEP2_FAULT_GPU_LOG": "1"})
    try:
        seen = {}
        for index, gpu in enumerate(("3", "5")):
            address, _ = tree.open(index, gpu)
            done, _ = tree.trial(address, index)
            assert done["exit"] == 0
            seen[gpu] = (tmp_path / "faults" / f"gpu-trial_{index:04d}.a1").read_text()
        assert seen == {"3": f"{GPU_ENV}=3\n", "5": f"{GPU_ENV}=5\n"}
    finally:
        tree.proc.stdin.close()
        tree.proc.wait(30)


def test_a_killed_slot_server_is_forked_again_and_serves_on(tree: Tree):
    """A slot server killed between trials, and one killed during a trial: each is reported gone, its trial
    dies with it, and a new one forked from the same rig server (no new import) serves the next trial."""
    address, ready = tree.open(0)
    assert tree.trial(address, 0)[0]["exit"] == 0
    os.kill(ready["pid"], signal.SIGKILL)  # between trials
    to, gone = tree.read()
    assert (to, gone) == (str(address), {"event": "slot-exit", "exit": -signal.SIGKILL})
    address, again = tree.open(0)
    assert again["pid"] != ready["pid"] and int(_stat(again["pid"])[1]) == tree.pid
    assert wait_for(lambda: len(children(again["pid"])) == 1)
    used = children(again["pid"])[0]
    assert tree.trial(address, 1)[0]["exit"] == 0

    assert wait_for(lambda: len(children(again["pid"])) == 1 and used not in children(again["pid"]))
    trial = children(again["pid"])[0]
    os.kill(trial, signal.SIGSTOP)  # the spare: the next trial will hang in it
    job = make_job(tree.root, HEAVIEST, trial_number=2, sample_size=20)
    write_json_atomic(tree.root / job.path, job.to_dict())
    tree.send(address, {"job": job.path, "timeout_s": 60, "log": "logs/hung.log"})
    assert wait_for(lambda: len(children(again["pid"])) == 2)  # the trial runs: the next one's spare is forked
    os.kill(again["pid"], signal.SIGKILL)  # during the trial
    assert tree.read() == (str(address), {"event": "slot-exit", "exit": -signal.SIGKILL})
    assert wait_for(lambda: not Path(f"/proc/{trial}").exists() or _stat(trial)[0] == "Z")  # it died with it
    address, third = tree.open(0)
    assert int(_stat(third["pid"])[1]) == tree.pid and tree.trial(address, 3)[0]["exit"] == 0


def test_a_spare_that_died_waiting_is_replaced(tree: Tree):
    address, ready = tree.open(0)
    assert wait_for(lambda: len(children(ready["pid"])) == 1)
    os.kill(children(ready["pid"])[0], signal.SIGKILL)  # the OOM killer, say
    assert wait_for(lambda: children(ready["pid"]) == [])  # reaped, not left a zombie
    done, result = tree.trial(address, 0)
    assert done["exit"] == 0 and result is not None and result["status"] == "success"


def test_a_trial_past_its_time_limit_is_killed(tree: Tree):
    address, ready = tree.open(0)
    assert wait_for(lambda: len(children(ready["pid"])) == 1)
    spare = children(ready["pid"])[0]
    job = make_job(tree.root, HEAVIEST, trial_number=0, sample_size=20)
    write_json_atomic(tree.root / job.path, job.to_dict())
    os.kill(spare, signal.SIGSTOP)  # it takes the job but cannot run it: the time limit ends it
    tree.send(address, {"job": job.path, "timeout_s": 1.0, "log": "logs/stopped.log"})
    _, done = tree.read()
    assert done["timed_out"] and done["exit"] == -signal.SIGKILL and "result" not in done
    assert not (tree.root / job.result_path).exists()
    done, result = tree.trial(address, 1)  # the server serves on
    assert done["exit"] == 0 and result is not None


def test_opening_a_busy_slot_replaces_its_server(tree: Tree):
    """One slot server per slot: a new open of the same slot kills the old one first (its exit is
    reported), then forks the new one."""
    old, first = tree.open(0)
    new = next(tree.addresses)
    tree.send(RIG, {"slot": new, "index": 0, "env": {GPU_ENV: ""}})
    assert tree.read() == (str(old), {"event": "slot-exit", "exit": -signal.SIGKILL})
    to, ready = tree.read()
    assert to == str(new) and ready["event"] == "ready" and ready["pid"] != first["pid"]


def test_stdin_closed_ends_the_whole_tree(tree: Tree):
    addresses = [tree.open(index)[0] for index in range(2)]
    done, _ = tree.trial(addresses[0], 0)
    assert done["exit"] == 0
    assert wait_for(lambda: len(tree.alive()) == 5)  # the rig server, two slot servers, their spares
    assert tree.proc.stdin is not None
    tree.proc.stdin.close()
    assert tree.proc.wait(20) == 0
    assert wait_for(lambda: tree.alive() == [])


def test_a_slot_server_whose_exit_comes_before_the_end_of_its_answers_leaves_no_closed_fd_watched(tmp_path: Path):
    """The rig server sees a killed slot server's exit (its pidfd) and the end of its answers' pipe in either
    order. Exit first: the pipe ends while its last answers are read, and must be unwatched before the reap
    closes it, or the next slot server's pipe, given the same fd number, cannot be watched."""
    head_r, head_w = os.pipe()
    rig = rig_server._Rig(tmp_path, "0" * 64, serve.Lines(head_r))
    try:
        rig._fork(protocol.OpenSlot(slot=1, index=0, env={}))
        server = rig.servers[1]
        server.kill()
        os.waitid(os.P_PIDFD, server.pidfd, os.WEXITED | os.WNOWAIT)  # dead, not reaped; its pipe not yet read
        assert not server.events.eof
        rig._exited(server)  # as when the exit comes first in a batch of events
        assert all(key.data is not server for key in rig.selector.get_map().values())
        rig._fork(protocol.OpenSlot(slot=2, index=0, env={}))  # may get the same fd numbers
        rig.servers[2].kill()
    finally:
        rig._close()
        rig.selector.close()
        os.close(head_w)
        os.close(head_r)
