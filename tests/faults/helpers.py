"""The fault suite's world and its one consistency check.

A `Cluster` is one scenario: a head folder (the coordinator's cwd, with a local head rig), OpenSSH
servers on loopback as rigs (each its own 127.0.0.x, keys and workdir) whose python may run the worker
with an injected fault (hooks/faulty_worker.py), and the `coordinator` CLI run as an operator runs it.
`assert_consistent` checks what every scenario must leave behind, and reports to the suite's summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from coordinator.inventory import Rig
from coordinator.results import RUNS_DIR
from coordinator.study import STUDIES_DIR, Study, TrialRecord, storage_path
from tests.faults.hooks.faulty_worker import hit_path
from tests.sshd import MARKER, SSHD, SshServer, _cmdline, _descendants, _stat, next_address, processes, wait_for
from worker import contract

REPO = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent / "hooks"
PY = sys.executable
STUDY = "s"
SAMPLE_SIZE = 100
RUN_MARK = "STEP2_FAULTS_RUN"  # in the coordinator's environment, so its head workers can be found
CONFIG = "optimal_scorer_config.json"
# The shared worker-fault run: rig -> its faults, one per attempt in turn (and a slot per fault).
MATRIX_RIGS = {"crash": ("exit", "sigkill", "truncate", "stale", "late"), "stuck": ("hang",)}
MATRIX_TRIALS = 10
MATRIX_TIMEOUT_S = 8.0
CONNECT_TIMEOUT_S = 15.0  # generous: sessions start slowly on a loaded 2-core machine (root's .bashrc runs pyenv)
WAIT_S = 240.0  # the longest a test waits for a run to get somewhere: a deadline, not a sleep

_WRAPPER = """#!/bin/sh
# The rig's python, with injected faults: `-m worker ...` runs tests/faults/hooks/faulty_worker.py.
if [ "$1" = "-m" ] && [ "$2" = "worker" ]; then
    shift 2
    export PYTHONPATH={hooks}:"$PYTHONPATH"
    exec {python} -m faulty_worker "$@"
fi
exec {python} "$@"
"""


@dataclass
class FaultSummary:
    """The suite's one summary line. Each scenario (test) reports the coordinator folder it checked;
    a folder's trials count once, however many scenarios share its run."""

    scenarios: set[str] = field(default_factory=set)
    folders: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # trials, lost, double

    def report(self, scenario: str, folder: Path, trials: int, lost: int = 0, double: int = 0) -> None:
        self.scenarios.add(scenario)
        self.folders[str(folder)] = (trials, lost, double)

    def line(self) -> str:
        trials, lost, double = (sum(column) for column in zip((0, 0, 0), *self.folders.values(), strict=True))
        return f"faults: scenarios={len(self.scenarios)} trials={trials} lost={lost} double={double}"


def rigs_toml(rigs: list[Rig]) -> str:
    """An inventory for these rigs: every field that differs from its default."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, tuple | list):
            return "[" + ", ".join(map(value, v)) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)  # numbers, and strings as TOML basic strings

    lines = []
    for rig in rigs:
        lines.append("[[rig]]")
        for f in dataclasses.fields(rig):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            current = getattr(rig, f.name)
            if current != default and current is not None:
                lines.append(f"{f.name} = {value(current)}")
    return "\n".join(lines) + "\n"


def _connections(server: SshServer) -> list[int]:
    """The rig's sshd processes serving connections (not its listener)."""
    assert server.proc is not None
    return [pid for pid in _descendants(server.proc.pid)[1:] if _cmdline(pid).startswith(b"sshd")]


def blocked_in_fifo_open(server: SshServer) -> bool:
    """Whether the rig's SFTP server is stuck opening a FIFO (the kernel's wait for a writer)."""
    for pid in _connections(server):
        try:
            if Path(f"/proc/{pid}/wchan").read_text() == "wait_for_partner":
                return True
        except OSError:
            pass
    return False


def rig_tree(server: SshServer) -> tuple[int | None, list[int]]:
    """(the rig server's pid, its slot servers' pids) of the warm process tree on an SSH rig; (None, [])
    when none is running. The rig server is the one its sshd session started."""
    parents = {pid: stat[1] for pid in server.processes() if b"serve" in _cmdline(pid) and (stat := _stat(pid))}
    roots = [pid for pid, parent in parents.items() if _cmdline(parent).startswith(b"sshd")]
    assert len(roots) <= 1, f"more than one rig server on the rig: {roots}"
    root = roots[0] if roots else None
    return root, sorted(pid for pid, parent in parents.items() if parent == root)


def failures_on(trials: dict[int, TrialRecord], rig: str) -> dict[int, list[dict[str, Any]]]:
    """trial number -> the failed attempts the rig made of it."""
    found = {n: [f for f in t.attrs.get("failures", []) if f["rig"] == rig] for n, t in trials.items()}
    return {n: failures for n, failures in found.items() if failures}


def cut_connections(server: SshServer) -> None:
    """Kill the rig's connections but not its listener: every open session drops at once, as when the
    network fails, and the rig still accepts new connections."""
    for pid in _connections(server):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Run:
    """A coordinator process whose output lines are kept as they come, with the second each arrived, so a
    test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc, self.started = proc, time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def _find(self, needle: str) -> tuple[float, str] | None:
        return next((entry for entry in self.lines if needle in entry[1]), None)

    def wait_line(self, needle: str, timeout: float = WAIT_S) -> tuple[float, str]:
        """(seconds since start, line) of the first output line containing needle."""
        assert wait_for(lambda: self._find(needle) or self.proc.poll() is not None, timeout), \
            f"no {needle!r} within {timeout} s:\n{self.output}"
        self._reader.join(0.2 if self.proc.poll() is None else 5)
        found = self._find(needle)
        assert found, f"the coordinator exited before {needle!r}:\n{self.output}"
        return found

    def finish(self, timeout: float = WAIT_S) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL the coordinator and the head's workers (its session), as a crash would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Cluster:
    """One scenario: the head folder, its rigs, and the coordinator runs made against them."""

    def __init__(self, root: Path, data: Path, summary: FaultSummary, scenario: str):
        self.root, self.data, self.summary, self.scenario = root, data, summary, scenario
        self.mark = uuid.uuid4().hex
        self.servers: dict[str, SshServer] = {}
        self.rigs = [Rig(name="head", python=PY, workdir=str(root / "rigs" / "head"), slots=1, local=True)]
        self.runs: list[Run] = []
        self.mounts: list[Path] = []
        root.mkdir(parents=True, exist_ok=True)

    # -- rigs --------------------------------------------------------------------------------------

    def ssh_rig(self, name: str, *faults: str, **fields: Any) -> SshServer:
        """A new rig behind its own sshd; with faults, its python runs the faulty worker, which gives the
        rig's first attempt the first fault, its second attempt the second, and so on."""
        server = SshServer(next_address(), self.root / "sshd" / name).start()
        self.servers[name] = server
        self.rigs.append(server.rig(name, **{"connect_timeout_s": CONNECT_TIMEOUT_S, **fields}))
        if faults:
            self.instrument(name, STEP2_FAULT=",".join(faults))
        return server

    def retarget(self, name: str, **fields: Any) -> None:
        """Change fields of a rig's inventory entry."""
        rig = self.rig(name)
        self.rigs[self.rigs.index(rig)] = dataclasses.replace(rig, **fields)

    def instrument(self, name: str, **env: str) -> None:
        """Run the rig's worker as the faulty worker, with these variables (see hooks/faulty_worker.py)."""
        python = self.root / f"python-{name}"
        python.write_text(_WRAPPER.format(hooks=shlex.quote(str(HOOKS)), python=shlex.quote(PY)))
        python.chmod(0o755)
        self.retarget(name, python=str(python), env={**self.rig(name).env, **env})

    def barrier(self, *names: str) -> None:
        """These rigs' slot servers report ready together (the head's always among them, unless it was
        dropped): each slot's first trial is taken at the same moment, so every faulty rig gets one, and the
        head is alive to take retries."""
        folder = self.root / "barrier"
        folder.mkdir()
        rigs = [self.rig(name) for name in ("head", *names) if any(r.name == name for r in self.rigs)]
        for rig in rigs:
            self.instrument(rig.name, STEP2_FAULT_BARRIER=f"{folder}:{sum(r.slots for r in rigs)}")

    def drop_head(self) -> None:
        """No head rig in the inventory: retries go to whichever slot is free."""
        self.rigs.remove(self.rig("head"))

    def warm_ups(self, name: str) -> int:
        """How many rig servers paid the imports on an instrumented rig."""
        return len(list(self.workdir(name).glob(hit_path("warm-up.*"))))

    def rig(self, name: str) -> Rig:
        return next(r for r in self.rigs if r.name == name)

    def workdir(self, name: str) -> Path:
        return Path(self.rig(name).workdir)

    def hit(self, name: str, fault: str, timeout: float = WAIT_S) -> tuple[int, int, int]:
        """(trial number, attempt, pid) of the attempt the rig's fault hit, waiting for it to happen."""
        path = self.workdir(name) / hit_path(fault)
        assert wait_for(lambda: path.exists() and path.read_text().endswith("\n"), timeout), \
            f"{name}: no {fault}" + "".join(f"\n{run.output}" for run in self.runs[-1:])
        tid, attempt, pid = path.read_text().split()
        return int(tid.removeprefix("trial_")), int(attempt), int(pid)

    def tmpfs(self, path: Path, size: str) -> None:
        """A small filesystem of its own at path (needs root)."""
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
        self.mounts.append(path)

    def leftovers(self) -> list[int]:
        """Processes still running on any rig, or the head's workers."""
        pids = processes(RUN_MARK, self.mark)
        for server in self.servers.values():
            pids += processes(MARKER, server.token)
        return pids

    # -- the coordinator ----------------------------------------------------------------------------

    def coordinator(self, *args: str, stdin: Any = subprocess.DEVNULL, umask: int = -1) -> Run:
        """The `coordinator` CLI in the head folder, as its own session (umask -1: the test's own)."""
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", RUN_MARK: self.mark}
        proc = subprocess.Popen([PY, "-m", "coordinator.cli", *args], cwd=self.root, env=env, text=True,
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, umask=umask)
        self.runs.append(Run(proc))
        return self.runs[-1]

    def step2(self, trials: int, *extra: str, timeout_s: float = 10, inventory: str | None = None,
              study: str = STUDY, data: Path | None = None, rigs: str = "rigs.toml", **options: Any) -> Run:
        """`coordinator step2` on this cluster's rigs (or the inventory text given, written to `rigs`), small
        trials, a short time limit; options go to coordinator()."""
        (self.root / rigs).write_text(inventory or rigs_toml(self.rigs))
        return self.coordinator("step2", "--rigs", rigs, "--data", str(data or self.data), "--trials",
                                str(trials), "--sample-size", str(SAMPLE_SIZE), "--replicates", "2", "--eval-size",
                                str(3 * SAMPLE_SIZE), "--nulls", "50", "--confirm-top", "0", "--study", study,
                                "--trial-timeout",
                                f"{timeout_s:g}", "--no-tui", *extra, **options)

    def resume(self, *extra: str, study: str = STUDY) -> Run:
        """`coordinator step2 --resume` of a study of this cluster."""
        return self.coordinator("step2", "--rigs", "rigs.toml", "--resume", study, "--no-tui", *extra)

    def finish(self, run: Run, expect: int = 0) -> str:
        """Wait for a run to end with `expect`, then for every rig and head worker to be gone."""
        code = run.finish()
        assert code == expect, f"exit {code}, expected {expect}:\n{run.output}"
        assert wait_for(lambda: not self.leftovers(), 10), f"left running: {self.leftovers()}"
        return run.output

    def run(self, trials: int, *extra: str, expect: int = 0, timeout_s: float = 10) -> str:
        return self.finish(self.step2(trials, *extra, timeout_s=timeout_s), expect)

    def assert_refused(self, run: Run, *needles: str) -> str:
        """The run stopped before anything was created: exit 2 and one error line holding every needle (the
        file and the problem), no study journal, no runs/ or jobs/ on the head, no job on its rig."""
        errors = [line for line in self.finish(run, expect=2).splitlines() if line.startswith("coordinator ")]
        assert len(errors) == 1 and all(n in errors[0] for n in needles), f"{needles} not in {errors}"
        assert not storage_path(STUDY, self.root / STUDIES_DIR).exists()
        assert not (self.root / RUNS_DIR).exists() and not (self.root / "jobs").exists()
        assert not list(self.workdir("head").glob("jobs/**/*.json"))
        self.summary.report(self.scenario, self.root, 0)
        return errors[0]

    def check(self, trials: int, scenario: str | None = None, study: str = STUDY,
              config: str = CONFIG) -> dict[int, TrialRecord]:
        """assert_consistent on this cluster's folder, reported for `scenario` (default: the cluster's)."""

        def report(lost: int, double: int) -> None:
            self.summary.report(scenario or self.scenario, self.root / study, trials, lost, double)

        return assert_consistent(self.root, trials, report, study, config)

    def close(self) -> None:
        """Kill what is left. Rig sessions get a moment to end on their own first: a shell killed while
        its .bashrc holds a lock (pyenv's rehash) would stall every later SSH session on this machine."""
        for run in self.runs:
            run.kill()
        wait_for(lambda: not self.leftovers(), 5)
        for server in self.servers.values():
            server.kill()
        for path in self.mounts:
            subprocess.run(["umount", "-l", str(path)], check=False)


@dataclass
class Matrix:
    """One run with a rig per worker fault, shared by the scenarios that each check one of them."""

    cluster: Cluster
    output: str
    hung_pid_gone_in_time: bool  # the stopped trial was gone once its retry was queued, its worker alive
    late_result: Path  # where the late attempt's own result landed on its rig


@contextmanager
def cluster_at(root: Path, data: Path, summary: FaultSummary, scenario: str) -> Iterator[Cluster]:
    """A Cluster in root, everything it started killed on the way out."""
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip(f"OpenSSH server not installed ({SSHD}): apt-get install openssh-server")
    world = Cluster(root, data, summary, scenario)
    try:
        yield world
    finally:
        world.close()


# -- the one consistency check ----------------------------------------------------------------------

_RECORD = re.compile(r"(trial_\d+)(?:\.a(\d+))?\.json")


def _tells(journal: Path) -> Counter[int]:
    """How often the journal finished each trial: anything but once is a result told twice (or never).
    The journal counts trials per storage; with one study per journal that is the trial number."""
    finished = {TrialState.COMPLETE.value, TrialState.FAIL.value}
    ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return Counter(op["trial_id"] for op in ops
                   if op["op_code"] == JournalOperation.SET_TRIAL_STATE_VALUES and op["state"] in finished)


def _settled(trial: TrialRecord, final: dict[str, Any] | None) -> bool:
    """COMPLETE with the archived success's accuracy, or FAIL with an archived error and a fail_reason."""
    if final is None:
        return False
    if trial.state == "COMPLETE":
        return final["status"] == "success" and final["accuracy"] == trial.value
    return trial.state == "FAIL" and final["status"] == "error" and bool(final["error"]) and bool(
        trial.attrs.get("fail_reason"))


def assert_consistent(root: Path, requested: int, report: Callable[[int, int], None],
                      study: str = STUDY, config_name: str = CONFIG) -> dict[int, TrialRecord]:
    """What every scenario must leave behind in the coordinator's folder: `requested` trials, each
    COMPLETE with its value equal to the archived final record's accuracy, or FAIL with an archived error
    record and a fail_reason; every attempt archived, the final record being the last attempt's; no trial
    RUNNING, told twice or collected from two attempts; optimal_scorer_config.json equal to the best trial.
    Lost and double trials are reported (report(lost, double)) before anything is asserted."""
    journal = storage_path(study, root / STUDIES_DIR)
    stored = Study(study, journal, seed=0, create=False, writer=False)
    trials, runs = {t.number: t for t in stored.trials()}, stored.meta().get("runs", [])
    finals: dict[str, dict[str, Any]] = {}
    attempts: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for path in (root / RUNS_DIR / study / "trials").glob("trial_*.json"):
        match = _RECORD.fullmatch(path.name)
        assert match, f"unexpected file in the archive: {path}"
        tid, attempt = match.groups()
        record = json.loads(path.read_text())
        if attempt:
            attempts[tid][int(attempt)] = record
        else:
            finals[tid] = record
    known = {contract.trial_id(n) for n in trials}
    lost = [contract.trial_id(n) for n in range(requested) if n not in trials]
    double = [f"extra trial {n}" for n in trials if n >= requested]
    double += [f"{tid} archived, not in the study" for tid in (set(finals) | set(attempts)) - known]
    tells = _tells(journal)
    for number, trial in trials.items():
        tid = contract.trial_id(number)
        tries, last = attempts.get(tid, {}), trial.attrs.get("attempts", 0)
        if not (_settled(trial, finals.get(tid)) and last >= 1 and set(range(1, last + 1)) <= set(tries)
                and finals[tid] == tries[last] and all(r["run_id"] in runs for r in tries.values())):
            lost.append(f"{tid} ({trial.state}, attempts {last}, archived {sorted(tries)})")
        successes = sum(r["status"] == "success" for r in tries.values())
        if tells[number] != 1 or successes > 1:
            double.append(f"{tid} (told {tells[number]} times, {successes} successful attempts archived)")
    report(len(lost), len(double))
    assert not lost, f"lost or inconsistent trials: {lost}"
    assert not double, f"trials counted twice: {double}"
    complete = [t for t in trials.values() if t.state == "COMPLETE"]
    config = root / config_name
    if not complete:
        assert not config.exists(), f"{config_name} written without a completed trial"
        return trials
    best = max(complete, key=lambda t: (t.value, -t.number))
    written = json.loads(config.read_text())
    assert written["accuracy"] == best.value and written["_run_context"]["trial_number"] == best.number
    assert {k: written[k] for k in best.params} == best.params
    return trials
