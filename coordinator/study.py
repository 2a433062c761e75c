"""The one module that talks to Optuna: a persistent study with an explicitly configured TPE.

The head is the only writer, so a journal file (replayed after a crash) is the storage. The owner's
flock keeps other writers out, so appends take no lock file, and the journal is fsynced where a
machine crash could otherwise lose something: before a job leaves the head (`sync`) and at every tell,
not at each of the dozen lines an ask writes. Every sampler setting that changed between Optuna
versions is set explicitly.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState as OptunaState

from worker.params import SEARCH_SPACE, Choice, FloatRange, IntRange

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDIES_DIR = Path("optuna_studies")


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
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, n_startup_trials=10)


class _OwnedJournal(JournalFileBackend):
    """Optuna's journal file as its one writer appends it: one write() per append to a file opened with
    O_APPEND, and fsync on `sync()`. (Readers use JournalFileBackend itself; they never append.)"""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._write_lock = threading.Lock()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode()
        with self._write_lock:
            while data:
                data = data[os.write(self._fd, data):]

    def sync(self) -> None:
        os.fsync(self._fd)


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
    """Ask, tell, attributes; thread-safe, since every slot thread reports here."""

    def __init__(self, name: str, path: Path, *, seed: int, create: bool, writer: bool = True):
        self.name, self.path = name, path
        if create and path.exists():
            raise StudyError(f"{path}: a study is already stored there; resume it with --resume {name}")
        if not create and not path.exists():
            raise StudyError(f"{path}: no such study")
        path.parent.mkdir(parents=True, exist_ok=True)
        if writer:
            self._own(path)
        self._journal = _OwnedJournal(path) if writer else _ReadOnlyJournal(path)
        storage = JournalStorage(self._journal)
        self.lock = threading.Lock()
        self.dists = distributions()
        if create:
            self.study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                             sampler=make_sampler(seed))
        else:
            self.study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(seed))
        self._trials: dict[int, optuna.Trial] = {}

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
            self._sync()

    def _sync(self) -> None:
        if isinstance(self._journal, _OwnedJournal):
            self._journal.sync()

    def sync(self) -> None:
        """Make everything written so far survive a machine crash: call before anything that refers to
        it (a job) leaves the head."""
        with self.lock:
            self._sync()

    def meta(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.study.user_attrs)

    # -- trials --------------------------------------------------------------------------------

    def ask(self) -> tuple[int, dict[str, Any]]:
        with self.lock:
            trial = self.study.ask(self.dists)
            self._trials[trial.number] = trial
            return trial.number, dict(trial.params)

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
            self._sync()

    def tell_fail(self, number: int, reason: str) -> None:
        """A crash is told as FAIL with its reason, never as a value (and never as PRUNED)."""
        with self.lock:
            self._trial(number).set_user_attr("fail_reason", reason)
            self.study.tell(self._trial(number), state=OptunaState.FAIL)
            self._sync()

    def trials(self) -> list[TrialRecord]:
        with self.lock:
            return [TrialRecord(t.number, TrialState(t.state.name), t.value, dict(t.params), dict(t.user_attrs))
                    for t in self.study.get_trials(deepcopy=False)]

    def best(self) -> TrialRecord | None:
        done = [t for t in self.trials() if t.state == TrialState.COMPLETE]
        return max(done, key=lambda t: (t.value, -t.number)) if done else None


def study_names(directory: Path = STUDIES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.journal"))
