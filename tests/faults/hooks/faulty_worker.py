"""The real worker with an injected fault, for the fault suite's rigs.

A test rig's `python` is a wrapper script that runs `-m faulty_worker ...` instead of `-m worker ...`
with this folder on PYTHONPATH; everything else is the real worker (serve loop, fork, time limit,
result writing). STEP2_FAULT names faults, comma-separated: the rig's first attempt gets the first, its
second attempt the second, and so on; each hit leaves `faults/hit-<fault>` in the workdir ("trial_id
attempt pid") so a test knows which trial it hit.
STEP2_FAULT_BARRIER ("folder:count") holds the worker's "ready" until `count` workers are ready, so
every slot takes its first trial at the same moment, however unevenly the machine starts them.
STEP2_FAULT_MEET ("mine:theirs") holds "ready" until another run's worker is ready: it leaves a mark in
folder `mine` and waits until folder `theirs` holds one, so two runs take their first trials together.
STEP2_FAULT_FORK ("slot@N", "trial@N", comma-separated) makes the rig's Nth fork of a slot server (by the
rig's server) or of a trial's process (by a slot server) fail as a process limit would (EAGAIN).
Each warm-up (the imports, once per rig server) leaves `faults/hit-warm-up.<pid>`; with STEP2_FAULT_GPU_LOG
set, each trial writes the GPU variables it sees to `faults/gpu-<trial_id>.a<attempt>` ("name=value" lines).
Runs on the rig, so it needs only the worker's own dependencies.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from worker import __main__ as cli
from worker import contract, protocol, rig_server, serve
from worker.contract import Job
from worker.files import write_json_atomic

PLAN = [fault for fault in os.environ.get("STEP2_FAULT", "").split(",") if fault]
BARRIER = os.environ.get("STEP2_FAULT_BARRIER", "")
MEET = os.environ.get("STEP2_FAULT_MEET", "")
FAILING_FORKS = {(who, int(n)) for who, _, n in (item.partition("@") for item in
                                                 os.environ.get("STEP2_FAULT_FORK", "").split(",") if item)}
GPU_LOG = bool(os.environ.get("STEP2_FAULT_GPU_LOG"))
GPU_VARS = ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
STALE_RUN_ID = "r-earlier-run"
STALE_ACCURACY = 0.987654  # a tempting value that must never reach the study
LATE_GO = "faults/go"  # the test creates it when the late attempt's result should land
HOLD_GO = "faults/go-hold"  # the test creates it when the held attempt should crash
WAIT_S = 120.0  # the longest a late attempt or a barrier waits for its signal

Outcome = tuple[dict | None, int]
Run = Callable[[], Outcome]  # the real attempt
real_execute = serve.execute
real_emit = serve._emit
real_warm_up = rig_server.warm_up


def _wait(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def _exit(run: Run, root: Path, job: Job) -> Outcome:
    os._exit(3)


def _signal(sig: signal.Signals) -> Callable[[Run, Path, Job], Outcome]:
    def fault(run: Run, root: Path, job: Job) -> Outcome:
        os.kill(os.getpid(), sig)
        return run()  # only if something sends SIGCONT

    return fault


def _truncate(run: Run, root: Path, job: Job) -> Outcome:
    """The trial succeeds, then its result file is cut in half (a crash mid-write)."""
    outcome = run()
    path = root / job.result_path
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return outcome


def _stale(run: Run, root: Path, job: Job) -> Outcome:
    """An earlier run's success sits where this attempt's result belongs, and the attempt exits 0."""
    record = contract.make_result({**job.identity(), "run_id": STALE_RUN_ID}, accuracy=STALE_ACCURACY,
                                  error=None)
    write_json_atomic(root / job.result_path, record)
    return record, 0


def _late(run: Run, root: Path, job: Job) -> Outcome:
    """The attempt hangs past its time limit, but a process of its own (out of the trial's process group,
    so nothing kills it) writes the real result once the test says so."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            _wait((root / LATE_GO).exists)
            run()
        os._exit(0)
    os.wait()
    time.sleep(WAIT_S)
    return None, 1


def _hold(run: Run, root: Path, job: Job) -> Outcome:
    """The attempt waits for the test's word, then crashes."""
    _wait((root / HOLD_GO).exists)
    os._exit(3)


def _drop(run: Run, root: Path, job: Job) -> Outcome:
    """The result is written, then swapped for a FIFO: the head's fetch blocks opening it, until the
    test, which sees it blocked, cuts the rig's connections."""
    outcome = run()
    path = root / job.result_path
    fifo = path.with_name(path.name + ".fifo")
    os.mkfifo(fifo, 0o644)
    os.replace(fifo, path)
    return outcome


def _fill(run: Run, root: Path, job: Job) -> Outcome:
    """Something on the rig fills the workdir's disk while the trial runs."""
    block = b"\0" * (1 << 16)
    try:
        with open(root / "faults" / "fill.bin", "ab") as fh:
            while True:
                fh.write(block)
                fh.flush()
    except OSError:
        pass
    return run()


def _corrupt(run: Run, root: Path, job: Job) -> Outcome:
    """Something on the rig changes the study's survivors file: this attempt, and every later one on the
    rig, finds that it no longer matches the hash its job expects."""
    with open(root / job.payload.data["survivors"].path, "ab") as fh:
        fh.write(b"\0")
    return run()


FAULTS: dict[str, Callable[[Run, Path, Job], Outcome]] = {
    "exit": _exit,
    "sigkill": _signal(signal.SIGKILL),  # as the OOM killer does
    "hang": _signal(signal.SIGSTOP),
    "truncate": _truncate,
    "stale": _stale,
    "late": _late,
    "hold": _hold,
    "drop": _drop,
    "fill": _fill,
    "corrupt": _corrupt,
}


def hit_path(fault: str) -> str:
    return f"faults/hit-{fault}"


def gpu_path(job: Job) -> str:
    return f"faults/gpu-{job.trial_id}.a{job.attempt}"


def _claim(path: Path, text: str) -> bool:
    """Create the marker file, unless it exists: markers count hits across the rig's processes."""
    path.parent.mkdir(exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, text.encode())
    os.close(fd)
    return True


def faulty_execute(job_file: str, root: Path, own_hash: str, cache: dict | None = None) -> Outcome:
    """serve's execute: the rig's next planned fault, or the real thing once the plan is done."""

    def run() -> Outcome:
        return real_execute(job_file, root, own_hash, cache)

    if not PLAN and not GPU_LOG:
        return run()
    job = contract.load_job(contract.resolve_inside(root, job_file))
    if GPU_LOG:
        _claim(root / gpu_path(job), "".join(f"{name}={os.environ[name]}\n" for name in GPU_VARS if name in os.environ))
    for fault in PLAN:
        if _claim(root / hit_path(fault), f"{job.trial_id} {job.attempt} {os.getpid()}\n"):
            return FAULTS[fault](run, root, job)
    return run()


def _failing_forks(who: str) -> bool:
    """Whether this fork of a `who` ("slot", "trial"), numbered across the rig's processes, is to fail."""
    if not any(kind == who for kind, _ in FAILING_FORKS):
        return False
    number = next(n for n in itertools.count(1) if _claim(Path(hit_path(f"fork-{who}.{n}")), f"{os.getpid()}\n"))
    return (who, number) in FAILING_FORKS


class SlotServer(rig_server._SlotServer):
    def __init__(self, *args: object) -> None:
        if _failing_forks("slot"):
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        super().__init__(*args)


class Child(serve._Child):
    def __init__(self, *args: object) -> None:
        if _failing_forks("trial"):
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        super().__init__(*args)


def counted_warm_up() -> int:
    """rig_server's warm_up, leaving a marker per rig server that paid the imports."""
    _claim(Path(hit_path(f"warm-up.{os.getpid()}")), "")
    return real_warm_up()


def emit_at_barrier(event: protocol.Event) -> None:
    """serve's _emit; "ready" waits until the barrier's other workers, or the other run's, are ready too."""
    if isinstance(event, protocol.Ready) and BARRIER:
        folder, count = BARRIER.rsplit(":", 1)
        _hold(folder, folder, int(count))
    if isinstance(event, protocol.Ready) and MEET:
        mine, theirs = MEET.split(":")
        _hold(mine, theirs, 1)
    real_emit(event)


def _hold(mark: str, watch: str, count: int) -> None:
    """Leave this worker's mark in folder `mark`, then wait until folder `watch` holds `count` marks."""
    Path(mark, str(os.getpid())).touch()
    _wait(lambda: len(os.listdir(watch)) >= count)


if __name__ == "__main__":
    if set(PLAN) - set(FAULTS):
        sys.exit(f"faulty_worker: unknown STEP2_FAULT in {PLAN} (known: {', '.join(FAULTS)})")
    serve.execute, serve._emit, serve._Child = faulty_execute, emit_at_barrier, Child
    rig_server._SlotServer, rig_server.warm_up = SlotServer, counted_warm_up
    sys.exit(cli.main())
