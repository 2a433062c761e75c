"""Loopback rigs for the SSH benchmarks, set up as `coordinator step2` sets up real ones.

Each rig is a real OpenSSH server on its own 127.0.0.x (tests/sshd.py: throwaway keys, known_hosts);
the head is a local rig. The worker package and a tiny data set are deployed to every rig with
coordinator.deploy, and every rig's python is a wrapper that runs benchmarks.fake_worker for
`-m worker ...`, so trials take a fixed time. Each rig's slots are forked from one rig server, as on a
real rig. Warm slots stay up across scheduler runs; everything, sshd servers included, is stopped when
the `Loopback` context exits, on error too.
"""

from __future__ import annotations

import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Protocol

from benchmarks.fake_worker import TRIAL_S_ENV
from coordinator.dataset import load_data_dir
from coordinator.deploy import deploy, worker_bundle
from coordinator.inventory import Rig
from coordinator.rig_server import RigServer
from coordinator.scheduler import Outcome, Task
from coordinator.settings import RunSettings, new_run_id
from coordinator.slots import WarmSlot
from coordinator.transport import Transport
from coordinator.transport.local import LocalTransport
from coordinator.transport.ssh import SshTransport
from tests.sshd import SshServer, next_address
from worker import contract
from worker.contract import Evaluation, Job
from worker.demo import write_uniform

REPO = Path(__file__).resolve().parent.parent

_WRAPPER = """#!/bin/sh
# A benchmark rig's python: `-m worker ...` runs benchmarks.fake_worker (a fixed-duration trial).
if [ "$1" = "-m" ] && [ "$2" = "worker" ]; then
    shift 2
    export PYTHONPATH="$PYTHONPATH:{repo}"
    exec {python} -m benchmarks.fake_worker "$@"
fi
exec {python} "$@"
"""


class JobSource(Protocol):
    """What the slots need from a scheduler source: FixedJobs, Step2Source."""

    def build(self, task: Task, rig: Rig) -> Job: ...


class KeepWarm:
    """An Executor around a WarmSlot whose worker outlives a scheduler run: the bench closes it, once."""

    def __init__(self, slot: WarmSlot):
        self.slot, self.rig, self.index = slot, slot.rig, slot.index

    def start(self) -> None:
        if self.slot.proc is None:
            self.slot.start()

    def execute(self, task: Task) -> Outcome:
        return self.slot.execute(task)

    def cancel(self) -> None:
        self.slot.cancel()

    def close(self) -> None:
        """Left to the Loopback's exit, so the next scheduler run finds the worker warm."""


class Loopback:
    """The head folder, its rigs and their warm slots. Slots build their jobs with `source.build`, so one
    set of warm slots serves a fresh source per scheduler run."""

    def __init__(self, root: Path):
        self.root = root
        self.stack = ExitStack()
        self.python = root / "python"
        self.settings: RunSettings
        self.files: dict[str, Path] = {}
        self.source: JobSource  # set before each scheduler run

    def __enter__(self) -> Loopback:
        self.root.mkdir(parents=True, exist_ok=True)
        self.python.write_text(_WRAPPER.format(repo=shlex.quote(str(REPO)), python=shlex.quote(sys.executable)))
        self.python.chmod(0o755)
        data = self.root / "data"
        write_uniform(data, n_survivors=8, n_train=20, n_holdout=10)
        dataset = load_data_dir(data)
        self.settings = RunSettings(study="bench", run_id=new_run_id(), code_hash=contract.code_hash(),
                                    prng_type=dataset.prng_type, mod=dataset.mod, sample_size=4, timeout_s=60.0,
                                    data=dataset.refs, evaluation=Evaluation(1, 4, 0, "spearman_rho"))
        self.files = {**worker_bundle(), **{ref.path: dataset.files[role] for role, ref in dataset.refs.items()}}
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stack.close()

    def head(self, slots: int, trial_s: float) -> Transport:
        rig = Rig(name="head", python=str(self.python), workdir=str(self.root / "rigs" / "head"), slots=slots,
                  local=True, env={TRIAL_S_ENV: str(trial_s)})
        return self._open(LocalTransport(rig))

    def ssh_rig(self, name: str, slots: int, trial_s: float) -> Transport:
        server = SshServer(next_address(), self.root / "sshd" / name)
        self.stack.callback(server.kill)  # sshd and everything its sessions started
        server.start()
        rig = server.rig(name, slots=slots, python=str(self.python), workdir=str(self.root / "rigs" / name),
                         env={TRIAL_S_ENV: str(trial_s)})
        return self._open(SshTransport(rig))

    def _open(self, transport: Transport) -> Transport:
        self.stack.callback(transport.close)
        deploy(transport, self.files)
        return transport

    def rig_server(self, transport: Transport) -> RigServer:
        """A rig server for the benchmark's data, killed with its tree when the Loopback exits."""
        server = RigServer(transport, self.settings.code_hash, self.settings.data)
        self.stack.callback(server.close)
        return server

    def slots(self, server: RigServer, count: int) -> list[KeepWarm]:
        """Warm slots 0..count-1 of a rig (not started), building their jobs with `source.build`."""
        rig = server.rig
        slots = [KeepWarm(WarmSlot(server, i, lambda task: self.source.build(task, rig))) for i in range(count)]
        for slot in slots:
            self.stack.callback(slot.slot.close)
        return slots

    def warm_slots(self, transports: list[Transport]) -> list[KeepWarm]:
        """One started warm slot per (rig, slot index), all starting at once, as the scheduler starts them."""
        slots = [slot for t in transports for slot in self.slots(self.rig_server(t), t.rig.slots)]
        start_all(slots)
        return slots


def start_all(slots: list[KeepWarm]) -> None:
    with ThreadPoolExecutor(len(slots)) as pool:
        list(pool.map(lambda s: s.start(), slots))
