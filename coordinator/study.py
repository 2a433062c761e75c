"""The one module that talks to Optuna: a persistent study with an explicitly configured TPE.

The head is the only writer, so a journal file (replayed after a crash) is the storage. The owner's
flock keeps other writers out, so appends take no lock file, the owner reads its own appends back from
memory, and the journal is fsynced where a machine crash could otherwise lose something: before a job
leaves the head (`sync`) and at every tell, not at each of the dozen lines an ask writes, and never
under the study's lock. Every sampler setting that changed between Optuna versions is set explicitly;
the sampler is coordinator/fast_tpe.py's exact, faster TPE where the installed Optuna is the one checked.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState as OptunaState

from coordinator import ask_pool, fast_tpe
from coordinator.ask_pool import AskPool, Changes
from worker.params import SEARCH_SPACE, Choice, FloatRange, IntRange

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

STUDIES_DIR = Path("optuna_studies")
STARTUP_TRIALS = 10  # TPE's random trials; asks are cheap until this many have completed
ASK_PROCESSES = 2  # per writing study, once its asks are TPE's (coordinator/ask_pool.py)


class StudyError(RuntimeError):
    pass


class TrialState(StrEnum):
    """A trial's state as the coordinator reads it (Optuna's names, which the journal holds)."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    PRUNED = "PRUNED"
    WAITING = "WAITING"


def _distribution(dim: IntRange | FloatRange | Choice) -> BaseDistribution:
    if isinstance(dim, IntRange):
        return IntDistribution(dim.low, dim.high)
    if isinstance(dim, FloatRange):
        return FloatDistribution(dim.low, dim.high, log=dim.log)
    return CategoricalDistribution(dim.options)


def distributions() -> dict[str, BaseDistribution]:
    """The worker's search space as Optuna distributions: the one place the two meet."""
    return {name: _distribution(dim) for name, dim in SEARCH_SPACE.items()}


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    return fast_tpe.make_tpe(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=STARTUP_TRIALS)


def _cut_torn_line(path: Path) -> int:
    """Truncate a last line that a crash left half-written; returns the bytes cut. Optuna's replay skips
    such a line, and the next append would join it into one corrupt line that no replay gets past."""
    with open(path, "ab+") as f:
        size = end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
            os.fsync(f.fileno())
    return size - end


class _OwnedJournal(JournalFileBackend):
    """Optuna's journal file as its one writer (the owner flock) appends and reads it.

    An append is one write() to a file opened with O_APPEND. `sync` fsyncs outside the study's lock,
    and one fsync serves every thread whose appends came before it. The file is read once, by the
    replay that opens the study: from then on each of its lines is one this object appended, so reads
    are answered from the lines kept in memory. `lines` counts the file's lines. (Readers use
    JournalFileBackend itself; they never append.)"""

    def __init__(self, path: Path):
        cut = _cut_torn_line(path)
        if cut:
            log.warning("%s: cut off a half-written last line (%d bytes) left by a crash", path, cut)
        super().__init__(str(path))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._write_lock = threading.Lock()  # the appends, the lines kept and the counters below
        self._sync_lock = threading.Lock()
        self._tail: list[bytes] | None = None  # lines appended and not yet read back; None until the replay
        self._tail_from = 0  # the line number of _tail[0]
        self._written = self._synced = 0  # bytes appended, and bytes known to be on disk

    @property
    def lines(self) -> int:
        with self._write_lock:
            return self._tail_from + len(self._tail or ())

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        with self._write_lock:
            if self._tail is None or log_number_from < self._tail_from:
                logs = list(super().read_logs(log_number_from))
                self._tail, self._tail_from = [], log_number_from + len(logs)
                return iter(logs)
            # Lines before log_number_from have been applied. The rest stay until a read shows they were:
            # when applying one raises, the replay reads the ones after it again, as from the file.
            del self._tail[:log_number_from - self._tail_from]
            self._tail_from = log_number_from
            lines = list(self._tail)
        return (json.loads(line) for line in lines)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lines = [json.dumps(log, separators=(",", ":")).encode() + b"\n" for log in logs]
        data = b"".join(lines)
        with self._write_lock:
            if self._tail is None:
                raise StudyError(f"{self._file_path}: appended to before it was read")
            self._written += len(data)
            while data:
                data = data[os.write(self._fd, data):]
            self._tail.extend(lines)

    def sync(self) -> None:
        with self._write_lock:
            wanted = self._written
        with self._sync_lock:
            if self._synced >= wanted:  # an fsync that began after those appends has finished
                return
            with self._write_lock:
                covered = self._written
            os.fsync(self._fd)
            self._synced = covered


class _ReadOnlyJournal(JournalFileBackend):
    """The journal file as a reader sees it: any write through it is refused (only its owner writes)."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StudyError(f"{self.path}: read-only here; only the coordinator that owns the study writes it")


def read_only_storage(path: Path) -> JournalStorage:
    """A study's journal for readers (the report, the dashboard): they can never change it."""
    return JournalStorage(_ReadOnlyJournal(path))


def storage_path(name: str, directory: Path = STUDIES_DIR) -> Path:
    return directory / f"{name}.journal"


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any]


class Study:
    """Ask, tell, attributes; thread-safe, since every slot thread reports here.

    An ask takes the parameters one of the study's ask processes has ready (coordinator/ask_pool.py),
    or has the sampler propose them in the head when none is, and stores the trial with all of them in
    one journal line: a crash cannot leave it half-asked. A writing study starts `ask_processes` of them
    at its first ask and takes their proposals once TPE's startup trials are done; `close` stops them (so
    do its garbage collection and the interpreter's exit). Where the installed Optuna is not the one
    coordinator/fast_tpe.py checked, asks are Optuna's own `study.ask`, in the head."""

    def __init__(self, name: str, path: Path, *, seed: int, create: bool, writer: bool = True,
                 ask_processes: int = ASK_PROCESSES):
        self.name, self.path, self.seed = name, path, seed
        if create and path.exists():
            raise StudyError(f"{path}: a study is already stored there; resume it with --resume {name}")
        if not create and not path.exists():
            raise StudyError(f"{path}: no such study")
        path.parent.mkdir(parents=True, exist_ok=True)
        if writer:
            self._own(path)
        self._journal = _OwnedJournal(path) if writer else _ReadOnlyJournal(path)
        try:
            storage = JournalStorage(self._journal)
        except ValueError as exc:  # a line that is not one of Optuna's (json.JSONDecodeError is one)
            raise StudyError(f"{path}: the journal cannot be replayed: {exc}") from exc
        self.lock = threading.Lock()
        self.dists = distributions()
        if create:
            self.study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                             sampler=make_sampler(seed))
        else:
            self.study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(seed))
        self._trials: dict[int, optuna.Trial] = {}
        trials = self.study.get_trials(deepcopy=False)
        self._running = {t.number for t in trials if t.state == OptunaState.RUNNING}
        # Trials in flight, for the freshness of proposals: the most that have run at once. The number
        # running now understates them while asks hold the slots up (slots wait instead of running).
        self._in_flight = len(self._running)
        self._changes = Changes(trials, STARTUP_TRIALS, fast_tpe.gamma)  # by which proposals are dated
        # Proposals rest on private Optuna calls, checked with the fast path.
        self._ask_processes = ask_processes if writer and fast_tpe.ACTIVE else 0
        self._pool: AskPool | None = None
        # This object's asks: made by ask processes, made in the head, and the changes of the study that
        # the ask processes' proposals had not seen and that changed what a proposal rests on.
        self.asks = {"ask_processes": 0, "head": 0, "missed": 0}

    def _own(self, path: Path) -> None:
        """One coordinator per study: an exclusive flock the kernel drops when the process dies. The lock
        file says who holds it, so the refusal can name that process."""
        self._owner = open(path.with_name(path.name + ".owner"), "a+")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._owner.seek(0)
            holder = self._owner.read().strip() or "a process that did not say who it is"
            raise StudyError(f"{path}: study {self.name} is in use by another coordinator ({holder}); wait for it"
                             " to end or stop it") from exc
        self._owner.truncate(0)
        self._owner.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self._owner.flush()

    # -- study-level attributes (the run's settings, so a resume needs no arguments) ---------------

    def set_meta(self, key: str, value: Any) -> None:
        with self.lock:
            self.study.set_user_attr(key, value)
        self.sync()

    def sync(self) -> None:
        """Make everything written so far survive a machine crash: call before anything that refers to
        it (a job) leaves the head. Outside the lock: the other slots' asks and tells go on meanwhile."""
        if isinstance(self._journal, _OwnedJournal):
            self._journal.sync()

    def meta(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.study.user_attrs)

    # -- trials --------------------------------------------------------------------------------

    def ask(self, **attrs: Any) -> tuple[int, dict[str, Any]]:
        """A new trial's number and parameters; `attrs`, its first user attributes, are stored with it."""
        pool = self._asks()
        proposal = pool.take(self._in_flight) if pool else None  # may wait: not under the lock
        with self.lock:
            if proposal is not None and not pool.usable(proposal):  # a change it may not miss came meanwhile
                proposal = None
            if proposal is not None:
                self.asks["ask_processes"] += 1
                self.asks["missed"] += self._changes.missed(proposal.seen)
            else:
                self.asks["head"] += 1
                if fast_tpe.ACTIVE:
                    proposal = ask_pool.propose(self.study._storage, self.name, self.study.sampler, self.dists,
                                                self.seed, lane=0)
            if proposal is not None:
                trial = self._create(proposal.params, attrs)
            else:
                trial = self.study.ask(self.dists)
                for key, value in attrs.items():
                    trial.set_user_attr(key, value)
            if proposal is not None and self._pool is not None:
                self._pool.drawn(proposal.draw)
            self._trials[trial.number] = trial
            self._running.add(trial.number)
            self._in_flight = max(self._in_flight, len(self._running))
            self._changes.asked()
            in_flight = self._in_flight
        if pool:
            pool.changed(in_flight)
        return trial.number, dict(trial.params)

    def _create(self, params: dict[str, Any], attrs: dict[str, Any]) -> optuna.Trial:
        """A RUNNING trial with these parameters and user attributes, in one journal line. Lock held."""
        template = optuna.trial.create_trial(state=OptunaState.RUNNING, params=params, distributions=self.dists,
                                             user_attrs=attrs)
        return optuna.Trial(self.study, self.study._storage.create_new_trial(self.study._study_id, template))

    def _asks(self) -> AskPool | None:
        """The ask processes: started at the first ask, so that their start (an import of Optuna, a replay
        of the journal) overlaps the first trials; they serve once TPE's asks begin (before that an ask
        is a random draw, cheaper made here than fetched)."""
        with self.lock:
            if self._pool is None and self._ask_processes:
                self._pool = AskPool(self.path, self.name, self.seed, self._ask_processes, self._changes)
                weakref.finalize(self, self._pool.close)
            return self._pool if self._changes.tpe_from is not None else None

    def _told(self, number: int, value: float | None) -> int:
        """Called with the lock held, after a tell (value None: a failure)."""
        self._running.discard(number)
        self._changes.told(number, value)
        return self._in_flight

    def _after_tell(self, in_flight: int) -> None:
        """The ask processes learn of the tell at once (they recompute while the journal syncs)."""
        if self._pool:
            self._pool.changed(in_flight)
        self.sync()

    def close(self) -> None:
        """Stop the ask processes; safe to call twice. The study stays usable, asking in the head."""
        with self.lock:
            pool, self._pool, self._ask_processes = self._pool, None, 0
        if pool:
            pool.close()

    def _trial(self, number: int) -> optuna.Trial:
        if number not in self._trials:  # a trial left RUNNING by an earlier coordinator
            frozen = self.study.get_trials(deepcopy=False)[number]
            self._trials[number] = optuna.Trial(self.study, frozen._trial_id)
        return self._trials[number]

    def complete_params(self, number: int) -> dict[str, Any]:
        """A trial's full parameter set. A coordinator killed inside `ask` can leave a RUNNING trial
        with only some parameters stored; the sampler draws the missing ones, so the trial runs
        whole instead of failing validation or being told twice."""
        with self.lock:
            storage, frozen = self.study._storage, self.study.get_trials(deepcopy=False)[number]
            for name, dist in self.dists.items():
                if name not in frozen.params:
                    value = self.study.sampler.sample_independent(self.study, frozen, name, dist)
                    storage.set_trial_param(frozen._trial_id, name, dist.to_internal_repr(value), dist)
            return dict(storage.get_trial(frozen._trial_id).params)

    def set_attrs(self, number: int, **attrs: Any) -> None:
        with self.lock:
            trial = self._trial(number)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

    def tell_value(self, number: int, value: float) -> None:
        with self.lock:
            self.study.tell(self._trial(number), value)
            in_flight = self._told(number, value)
        self._after_tell(in_flight)

    def tell_fail(self, number: int, reason: str) -> None:
        """A crash is told as FAIL with its reason, never as a value (and never as PRUNED)."""
        with self.lock:
            self._trial(number).set_user_attr("fail_reason", reason)
            self.study.tell(self._trial(number), state=OptunaState.FAIL)
            in_flight = self._told(number, None)
        self._after_tell(in_flight)

    def trials(self) -> list[TrialRecord]:
        with self.lock:
            return [TrialRecord(t.number, TrialState(t.state.name), t.value, dict(t.params), dict(t.user_attrs))
                    for t in self.study.get_trials(deepcopy=False)]

    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials() if t.state == TrialState.COMPLETE]
        return max(done, key=lambda t: (t.value, -t.number)) if done else None


def study_names(directory: Path = STUDIES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.journal"))
