"""Figures 3 and 4: what the coordinator adds to a trial, through real SSH on loopback.

Trials are fixed-duration fakes (benchmarks.fake_worker) run by the real Scheduler on real WarmSlots
over the real transports, and told to a real study (coordinator.step2.Step2Source) unless noted.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.report import figure
from benchmarks.rigs import KeepWarm, Loopback
from coordinator import results
from coordinator.events import Event
from coordinator.inventory import Rig
from coordinator.scheduler import Outcome, Scheduler, Task
from coordinator.settings import RunSettings, new_run_id
from coordinator.step2 import Step2Source
from coordinator.study import Study, storage_path
from worker import contract
from worker.bench import HEAVIEST
from worker.contract import Job

OLD_SSH = ("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes")


class FixedJobs:
    """`count` trials with no optimiser behind them, like the old coordinator's jobs file."""

    def __init__(self, settings: RunSettings, count: int):
        self.settings, self.numbers = settings, iter(range(count))

    def next_task(self) -> Task | None:
        number = next(self.numbers, None)
        return None if number is None else Task(contract.trial_id(number), number)

    def build(self, task: Task, rig: Rig) -> Job:
        return self.settings.job(task.payload, HEAVIEST, task.attempt)

    def succeeded(self, task: Task, outcome: Outcome, rig: Rig) -> None:
        pass

    def attempt_failed(self, task: Task, outcome: Outcome, rig: Rig | None, final: bool) -> None:
        pass  # the watcher sees it and the figure is refused


class Timeline:
    """A watcher: when each slot started each trial and told its result, and every failure (any voids
    the figure). A slot's events alternate: started, finished (told), started, ..."""

    def __init__(self) -> None:
        self.slots: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.failures: list[str] = []
        self.cpu: dict[str, float] = {}
        self.asks: dict[str, int] = {}  # a study's, when the source was one

    def notify(self, event: Event) -> None:
        if event.kind in ("started", "finished"):
            self.slots[(event.rig, event.slot)].append(event.at)
        elif event.kind in ("retried", "failed", "slot-lost", "quarantined"):
            self.failures.append(f"{event.kind} {event.rig} {event.task}: {event.reason}")

    def told(self) -> list[float]:
        return sorted(at for times in self.slots.values() for at in times[1::2])

    def busy(self) -> list[float]:
        """Seconds from each trial's start to its result told."""
        return [told - start for times in self.slots.values()
                for start, told in zip(times[::2], times[1::2], strict=True)]

    def idle(self) -> list[float]:
        """Seconds from a slot's result told to its next trial's start (the ask, and the wait for it)."""
        return [start - told for times in self.slots.values()
                for told, start in zip(times[1::2], times[2::2], strict=False)]


CPU_ROLES = {"rigs": b"fake_worker\0serve", "ask_processes": b"coordinator.ask_pool", "sshd": b"sshd"}
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far on this machine by role: `head` (this process, every thread), `rigs` (rig
    and slot servers, with the trial processes they reaped), `ask_processes`, `sshd`."""
    used = dict.fromkeys(["head", *CPU_ROLES], 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = "head" if int(entry.name) == os.getpid() else next(
            (role for role, marker in CPU_ROLES.items() if marker in cmdline), None)
        if role is not None:
            used[role] += sum(int(f) for f in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
    return used


def schedule(lb: Loopback, slots: list[KeepWarm], source: FixedJobs | Step2Source) -> tuple[float, Timeline]:
    """Run the source's trials on the warm slots: (seconds, what happened when). The timeline also holds
    the CPU seconds each role used meanwhile (`cpu_seconds`)."""
    lb.source = source
    timeline = Timeline()
    before = cpu_seconds()
    start = time.monotonic()
    Scheduler(source, slots, timeline).run()
    seconds = time.monotonic() - start
    timeline.cpu = {role: used - before[role] for role, used in cpu_seconds().items()}
    if isinstance(source, Step2Source):
        timeline.asks = dict(source.study.asks)
    if timeline.failures:
        raise RuntimeError("benchmark trials failed: " + "; ".join(timeline.failures[:5]))
    return seconds, timeline


def study_source(lb: Loopback, study: Study, trials: int) -> Step2Source:
    """The real Step 2 source for `trials` new trials of `study`, in a run of its own."""
    settings = replace(lb.settings, study=study.name, run_id=new_run_id())
    return Step2Source(study, settings, results.Archive(study.name, lb.root / "runs"), trials, [], lb.root)


def new_study(lb: Loopback, name: str) -> Study:
    return Study(name, storage_path(name, lb.root / "optuna_studies"), seed=0, create=True)


def old_dispatch(rig: Rig, job: Job) -> float:
    """Seconds for one job the old way: a fresh `ssh` runs it in a fresh python that imports the worker,
    a second `ssh` reads its result and checks that it starts with '{'. The job file is already there."""
    ssh = [*OLD_SSH, "-i", str(rig.identity_file), "-o", f"UserKnownHostsFile={rig.known_hosts}",
           "-p", str(rig.port), f"{rig.user}@{rig.host}"]
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in {**rig.env, "PYTHONPATH": "code"}.items())
    workdir = shlex.quote(rig.workdir)
    job_file = job.path
    run = f"cd {workdir} && env {env} {shlex.quote(rig.python)} -m worker run {job_file}"
    start = time.monotonic()
    subprocess.run([*ssh, run], check=True, capture_output=True, timeout=300)
    out = subprocess.run([*ssh, f"cat {workdir}/{job.result_path}"], check=True, capture_output=True, timeout=60)
    seconds = time.monotonic() - start
    if not out.stdout.startswith(b"{"):
        raise RuntimeError(f"old-design job {job.trial_id} left no result: {out.stderr!r}")
    return seconds


def run_dispatch(work: Path, repeats: int = 5, trials: int = 20) -> dict[str, Any]:
    """Per-trial overhead with a no-op trial on one warm slot of one SSH rig: the time from one result
    told to the next (ask, the head's job copy written, the job sent in its request line, handed to the
    worker's child forked ahead, result written and sent back in the "done" line, validated, archived,
    told to a journal-file study), `trials` trials per repeat
    in one study that grows to `repeats * trials` trials. `without_study`: the same with fixed jobs
    and no study (the slot and transport alone). Each repeat first times one job of the old design on
    the same rig (a fresh `ssh` running a fresh python that imports the worker, then a fresh `ssh` to
    check its output; the job file is pushed beforehand, untimed), so `dispatch_ratio` = old job /
    median overhead in that repeat is measured under the same load. `asks`: how many of the study's asks
    took an ask process's proposal, how many the head made, and the changes those proposals missed."""
    with Loopback(work) as lb:
        transport = lb.ssh_rig("rig1", slots=1, trial_s=0.0)
        slots = lb.warm_slots([transport])
        study = new_study(lb, "dispatch")
        old: list[float] = []
        overheads: list[float] = []
        bare: list[float] = []
        ratios: list[float] = []

        def gaps(source: FixedJobs | Step2Source) -> list[float]:
            told = schedule(lb, slots, source)[1].told()
            return [(b - a) * 1000 for a, b in zip(told, told[1:], strict=False)]

        for repeat in range(repeats):
            settings = replace(lb.settings, run_id=new_run_id())
            job = settings.job(repeat, HEAVIEST, 1)
            transport.put_bytes(json.dumps(job.to_dict()).encode(), job.path)
            old.append(old_dispatch(transport.rig, job))
            told = gaps(study_source(lb, study, trials + 1))
            overheads += told
            bare += gaps(FixedJobs(settings, trials + 1))
            ratios.append(old[-1] * 1000 / statistics.median(told))
        asks = dict(study.asks)
        study.close()
    return {"dispatch_overhead_ms": figure(overheads, "ms", without_study=figure(bare, "ms"),
                                           trials_per_repeat=trials, asks=asks),
            "dispatch_ratio": figure(ratios, "x", old_design_s=figure(old, "s"))}


Sources = dict[str, Callable[[Loopback, int, int], FixedJobs | Step2Source]]  # figure -> (lb, repeat, trials) -> source


def fixed_jobs(lb: Loopback, repeat: int, trials: int) -> FixedJobs:
    return FixedJobs(replace(lb.settings, run_id=new_run_id()), trials)


def study_trials(lb: Loopback, repeat: int, trials: int) -> Step2Source:
    return study_source(lb, new_study(lb, f"makespan{repeat}"), trials)


def _makespan(work: Path, repeats: int, trials: int, trial_s: float, sources: Sources) -> tuple[dict[str, Any], float]:
    """Each source's makespan figure on one set of 26 warm slots, and the seconds those took to warm up."""
    with Loopback(work) as lb:
        transports = [lb.head(2, trial_s), *(lb.ssh_rig(f"rig{i}", 8, trial_s) for i in (1, 2, 3))]
        start = time.monotonic()
        slots = lb.warm_slots(transports)
        warmup = time.monotonic() - start
        ideal = math.ceil(trials / len(slots)) * trial_s
        runs: dict[str, list[tuple[float, Timeline]]] = {key: [] for key in sources}
        for repeat in range(repeats):
            for key, source in sources.items():
                made = source(lb, repeat, trials)
                runs[key].append(schedule(lb, slots, made))
                if isinstance(made, Step2Source):
                    made.study.close()  # its ask processes, idle from now on
    shape = {"slots": len(slots), "trials": trials, "trial_s": trial_s, "ideal_s": ideal, "cores": os.cpu_count()}
    return {key: figure([ideal / seconds for seconds, _ in done], "ideal/actual", **shape,
                        actual_s=figure([seconds for seconds, _ in done], "s"),
                        overhead_ms=figure([(b - trial_s) * 1000 for _, t in done for b in t.busy()], "ms"),
                        idle_ms=figure([i * 1000 for _, t in done for i in t.idle()], "ms"),
                        cpu_ms_per_trial={role: figure([t.cpu[role] * 1000 / trials for _, t in done], "ms")
                                          for role in done[0][1].cpu},
                        cores_busy=figure([sum(t.cpu.values()) / seconds for seconds, t in done], "cores"),
                        **_asks([t for _, t in done]))
            for key, done in runs.items()}, warmup


def _asks(timelines: list[Timeline]) -> dict[str, Any]:
    """The study's asks over the repeats, by who made them, and the changes the ask processes' proposals missed."""
    if not timelines[0].asks:
        return {}
    return {"asks": {key: sum(t.asks[key] for t in timelines) for key in timelines[0].asks}}


def run_makespan(work: Path, repeats: int = 3) -> dict[str, Any]:
    """Trials of a fixed length on 26 warm slots (2 on the head, 3 loopback SSH rigs x 8); efficiency =
    ideal / actual, ideal = ceil(trials / slots) * trial_s, actual = Scheduler.run()'s wall time. Slots
    are started first (their warm-up, once per study, is reported apart). At trial_s 2.0 (100 trials) two
    sources alternate: fixed jobs with no optimiser (as the old coordinator's measured jobs), and the real
    Step 2 source asking and telling a fresh study per run. At 0.25 s, about today's trial on a CPU
    (200 trials, fixed jobs: `makespan_efficiency_250ms`), on a fresh set of slots. Where the time goes,
    per trial: `overhead_ms` from start to result told beyond `trial_s` (job push, the child's start and
    exit, fetch, archive, tell, with 26 slots sharing the machine), `idle_ms` from a slot's result told to
    its next start (the ask, and waiting for the other slots' asks: the scheduler asks one at a time).
    `cpu_ms_per_trial`: the CPU each role used per trial (`cpu_seconds`: the head, the rigs' process
    trees with their trials' processes, the ask processes, sshd), and `cores_busy` their sum over the
    wall time. Here the head, 26 slot servers, 4 rig servers, their children and 3 sshd share this
    machine's cores; on the cluster each rig runs its trials' processes on its own CPUs."""
    figures, warmup = _makespan(work / "2s", repeats, 100, 2.0, {"makespan_efficiency": fixed_jobs,
                                                                 "makespan_efficiency_study": study_trials})
    short, _ = _makespan(work / "250ms", repeats, 200, 0.25, {"makespan_efficiency_250ms": fixed_jobs})
    return {**figures, **short, "slot_warmup_s": figure([warmup], "s", slots=figures["makespan_efficiency"]["slots"])}


def run_study_cost(work: Path, repeats: int = 3) -> dict[str, Any]:
    """What asking and telling the study costs the slots at short trials: `makespan_efficiency_study` /
    `makespan_efficiency` in each repeat (the two sources alternate on the same warm slots), at trial_s
    1.0 (100 trials) and at trial_s 0.25 (200 trials), with the efficiencies behind each ratio."""
    figures = {}
    for trial_s, trials in ((1.0, 100), (0.25, 200)):
        done, _ = _makespan(work / f"trial_s_{trial_s}", repeats, trials, trial_s,
                            {"makespan_efficiency": fixed_jobs, "makespan_efficiency_study": study_trials})
        fixed, study = done["makespan_efficiency"], done["makespan_efficiency_study"]
        figures[trial_s] = figure([s / f for s, f in zip(study["values"], fixed["values"], strict=True)], "x",
                                  trial_s=trial_s, trials=trials, makespan_efficiency=fixed,
                                  makespan_efficiency_study=study)
    return {"study_cost_ratio": {**figures[1.0], "at_trial_s_0_25": figures[0.25]}}
