"""The warm worker server as the coordinator drives it, on this machine: a child per trial, forked ahead
as a spare, "done" as soon as the result is written, and nothing left running once stdin closes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.bench import HEAVIEST, make_job
from worker.demo import write_uniform
from worker.files import write_json_atomic

REPO = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "serve", "--root", "."], cwd=root,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
        self.ready = self.read()
        assert self.ready["event"] == "ready"

    def read(self) -> dict:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def send(self, request: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def trial(self, number: int, timeout_s: float = 120.0) -> tuple[dict, dict | None]:
        """Run trial `number`: the "done" event and the result file (None if none was written)."""
        job = make_job(self.root, HEAVIEST, trial_number=number, sample_size=20)
        path = job.path
        write_json_atomic(self.root / path, job.to_dict())
        self.send({"job": path, "timeout_s": timeout_s, "log": f"logs/{job.trial_id}.log"})
        done = self.read()
        result = self.root / job.result_path
        return done, json.loads(result.read_text()) if result.exists() else None

    def children(self) -> list[int]:
        found = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return [int(pid) for pid in found]

    def group(self) -> list[int]:
        """Live processes of the server's process group, the server included."""
        pgid, alive = self.proc.pid, []
        for entry in Path("/proc").iterdir():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                alive.append(int(entry.name))
        return alive


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    write_uniform(tmp_path, n_survivors=60, n_train=2500, n_holdout=200)
    srv = Server(tmp_path)
    yield srv
    try:
        os.killpg(srv.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    srv.proc.wait()


def wait_for(done, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return done()


def test_trials_run_in_children_forked_ahead(server: Server):
    assert wait_for(lambda: len(server.children()) == 1)  # idle: the first trial's child is already forked
    spare = server.children()[0]
    done, result = server.trial(0)
    assert done["event"] == "done" and done["exit"] == 0 and not done["timed_out"]
    assert result is not None and result["status"] == "success"
    assert json.loads(done["result"]) == result  # the file's text travels in the line: no fetch
    # the spare ran the trial and is gone; the next trial's child is already forked
    assert wait_for(lambda: len(server.children()) == 1 and spare not in server.children())
    done, result = server.trial(1)
    assert done["exit"] == 0 and result is not None and result["status"] == "success"


def collapse_supported() -> bool:
    """Transparent huge pages not "never", and MADV_COLLAPSE (Linux 6.1)."""
    try:
        enabled = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return "[never]" not in enabled and (major, minor) >= (6, 1)


@pytest.mark.skipif(not collapse_supported(), reason="the kernel cannot collapse memory into huge pages")
def test_the_server_holds_its_memory_in_huge_pages(server: Server):
    # most of the ~250 MB that importing torch leaves behind: fork and exit walk 512x fewer page entries
    assert server.ready["huge_pages_mib"] >= 100
    smaps = Path(f"/proc/{server.proc.pid}/smaps_rollup").read_text()
    assert int(smaps.split("AnonHugePages:")[1].split()[0]) // 1024 >= 100


def test_a_spare_that_died_waiting_is_replaced(server: Server):
    assert wait_for(lambda: len(server.children()) == 1)
    os.kill(server.children()[0], signal.SIGKILL)  # the OOM killer, say
    assert wait_for(lambda: server.children() == [])  # reaped, not left a zombie
    done, result = server.trial(0)
    assert done["exit"] == 0 and result is not None and result["status"] == "success"


def test_a_trial_past_its_time_limit_is_killed(server: Server):
    assert wait_for(lambda: len(server.children()) == 1)
    spare = server.children()[0]
    job = make_job(server.root, HEAVIEST, trial_number=0, sample_size=20)
    path = job.path
    write_json_atomic(server.root / path, job.to_dict())
    os.kill(spare, signal.SIGSTOP)  # it takes the job but cannot run it: the time limit ends it
    server.send({"job": path, "timeout_s": 1.0, "log": "logs/stopped.log"})
    done = server.read()
    assert done["timed_out"] and done["exit"] == -signal.SIGKILL and "result" not in done
    assert not (server.root / job.result_path).exists()
    done, result = server.trial(1)  # the server serves on
    assert done["exit"] == 0 and result is not None


def test_stdin_closed_ends_the_server_and_every_child(server: Server):
    done, _ = server.trial(0)
    assert done["exit"] == 0 and wait_for(lambda: len(server.children()) == 1)
    assert server.proc.stdin is not None
    server.proc.stdin.close()
    assert server.proc.wait(10) == 0
    assert wait_for(lambda: server.group() == [])
