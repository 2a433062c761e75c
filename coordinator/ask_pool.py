"""Asks computed in other processes, so that a free slot finds its next trial's parameters ready.

A TPE ask over 1,000 trials is about ten milliseconds of Python and numpy, and the head's slot threads
share one GIL. An ask process replays the study's journal read-only (study.read_only_storage: Optuna's
JournalStorage over a backend that refuses writes, reading only the lines added since its last read)
and, on request, proposes the parameters the study's sampler would suggest for a new trial, given the
trials as the journal has them. The head stores a proposal as a new trial (coordinator/study.py), so the journal,
which the head alone writes, stays the one source of truth: an ask process holds no trial, and one that
dies loses or repeats nothing.

Draws. A proposal's random draw is seeded by the study's seed, the number of trials it saw and a lane:
lane 0 is the head's, and the one ask process's while no change may be missed; lanes 1, 2, ... are the
processes' own while several compute at once (two draws from one seed on one split would be one point).
So a proposal that missed nothing is the very one the head would make, whoever computes it, and a
seeded study run one trial at a time proposes the same trials however the asks are timed. No two
trials are made from one draw (`AskPool.drawn`).

Freshness. A study's changes are counted as its trials plus its finished trials: one per ask, one per
tell. A proposal records the count it saw. What a constant-liar TPE proposal rests on, besides its
random draw, is the split of the trials into "below" (the best gamma(n) completed) and "above" (the
other completed ones and every running one, its liar), each side ordered by trial number. A result that
ranks outside the best leaves both sides as they were (the trial was in "above" while it ran, and stays
there), so a proposal made before it is exactly the one the sampler would make after it, up to its
random draw. Only asks, failures and results that change the best gamma(n) change a proposal's inputs
(`Changes` counts them). A proposal may be used while at most one of those per `IN_FLIGHT_PER_MISSED`
trials in flight came after it (the study says how many fly: see Study). With one trial in flight
none may: the one proposal computed while it runs is used when its result lands outside the best, and
computed again otherwise. With many, TPE's constant liar already treats them as unknown and a few more
change little. A proposal too old is computed again as soon as it is, so the next ask finds it done or
nearly; one too old is never used (the head asks itself instead). Nor is one made before TPE's
startup trials were done: it is a random draw. None is computed before then.

Life. `AskPool` starts its processes from its own thread, which lives as long as the pool. Each process
asks the kernel to kill it when that thread ends (PR_SET_PDEATHSIG: the coordinator's death, even by
SIGKILL) and exits when its requests pipe closes. One that dies after it has served is started again;
one that dies before is not (the fault is in its start). With no process up, asks are made in the head.
Each runs in a process group of its own, so the terminal's Ctrl-C reaches the coordinator alone: it
stops, and closes the pool (the signal used to kill them mid-stop, and the pool started them again).
They stay in the coordinator's session, which Linux schedules as one (autogroup): sessions of their
own made no difference to the figures beyond their spread.
"""

from __future__ import annotations

import bisect
import ctypes
import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from coordinator.fast_tpe import FastTPESampler

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
RESTARTS = 5  # over the pool's life, for processes that had served
LATE_S = 1.0  # a request older than this is no longer waited for
IN_FLIGHT_PER_MISSED = 2


@dataclass(frozen=True)
class Proposal:
    params: dict[str, Any]
    seen: int  # the study's changes (`changes`) when it was computed
    draw: tuple[int, int]  # the trials it saw and its lane: what seeded its random draw


def changes(trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """A study's changes so far: one per trial asked, one per trial told (every trial not RUNNING or
    WAITING is finished: Optuna's `is_finished`, counted without a call per trial)."""
    states = [t.state for t in trials]
    return 2 * len(states) - states.count(optuna.trial.TrialState.RUNNING) - states.count(
        optuna.trial.TrialState.WAITING)


class Changes:
    """The study's changes, and how many of them changed what a TPE proposal rests on: every ask (a new
    running trial), every failure (a trial leaves the split), every result that changes the best
    `gamma(n)` completed trials, and every result before TPE's `startup` trials are done. The study
    records each change under its lock; `missed` is read by the ask pool's thread without it (a list
    that only grows). A study with PRUNED trials (Step 2 never prunes) counts every result."""

    def __init__(self, trials: Sequence[optuna.trial.FrozenTrial], startup: int, gamma: Callable[[int], int]):
        self.count = self._origin = changes(trials)
        self._startup, self._gamma = startup, gamma
        self._relevant = [0]  # _relevant[i]: the relevant ones among the first i changes since _origin
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        self._ranked = sorted((-float(t.value), t.number) for t in done)  # as TPE ranks: best first, ties by number
        self._every_result = any(t.state == optuna.trial.TrialState.PRUNED for t in trials)
        # from this many changes on, the study is past its startup trials: a proposal made before it is random
        self.tpe_from: int | None = self.count if len(done) >= startup else None

    def asked(self) -> None:
        self._record(True)

    def told(self, number: int, value: float | None) -> None:
        """A result (None: the trial failed)."""
        if value is None:
            self._record(True)
            return
        n = len(self._ranked)
        key = (-value, number)
        at = bisect.bisect(self._ranked, key)
        self._ranked.insert(at, key)
        self._record(self._every_result or n < self._startup or math.isnan(value)
                     or self._gamma(n + 1) != self._gamma(n) or at < self._gamma(n + 1))
        if n + 1 == self._startup:
            self.tpe_from = self.count

    def missed(self, seen: int) -> int:
        """The relevant changes after the first `seen` (a proposal made on the study as it was then)."""
        relevant = self._relevant
        return relevant[-1] - relevant[min(max(seen - self._origin, 0), len(relevant) - 1)]

    def _record(self, relevant: bool) -> None:
        self.count += 1
        self._relevant.append(self._relevant[-1] + relevant)


def draw_seed(seed: int, draw: tuple[int, int]) -> int:
    """The sampler's seed for one proposal: reproducible from the study's seed, distinct per draw."""
    return int(np.random.SeedSequence([seed, *draw]).generate_state(1)[0])


@dataclass
class _Process:
    index: int
    popen: subprocess.Popen | None = None
    served: bool = False  # has delivered a proposal
    requested: int | None = None  # the study's changes when the pending request was sent; None: idle
    since: float = 0.0  # when it was sent
    proposal: Proposal | None = None


class AskPool:
    """`processes` ask processes over the journal at `path`. Thread-safe; `close` is safe to call twice."""

    def __init__(self, path: Path, study: str, seed: int, processes: int, study_changes: Changes):
        self._path, self._study, self._seed = path, study, seed
        self._procs = [_Process(i) for i in range(processes)]
        self._cond = threading.Condition()
        self._changes = study_changes
        self._in_flight = 0  # as the study last said
        self._drawn: set[tuple[int, int]] = set()  # the draws trials were made from
        self._restarts = RESTARTS
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._keep, name="ask-pool", daemon=True)
        self._thread.start()

    # -- the study's side --------------------------------------------------------------------------

    def take(self, in_flight: int) -> Proposal | None:
        """A proposal fresh enough for the study's trials `in_flight`, waiting while one is on its way. None
        when there is none, none is coming, or no process is up: the head then asks itself."""
        with self._cond:
            self._in_flight = in_flight
            while True:
                usable = [p for p in self._procs if self.usable(p.proposal)]
                if usable:
                    return self._pop(max(usable, key=lambda p: p.proposal.seen if p.proposal else 0))
                if not self._coming():
                    self._refresh()
                if not self._coming():
                    return None
                self._cond.wait(LATE_S)

    def changed(self, in_flight: int) -> None:
        """The study changed: idle processes whose proposal would be refused now compute a new one."""
        with self._cond:
            self._in_flight = in_flight
            self._refresh()

    def close(self) -> None:
        """Stop the processes and the pool's thread."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
        os.write(self._wake_w, b"x")
        self._thread.join()

    # -- requests (lock held) ------------------------------------------------------------------------

    @property
    def _allowed(self) -> int:
        """The changes a proposal may have missed."""
        return self._in_flight // IN_FLIGHT_PER_MISSED

    def usable(self, proposal: Proposal | None) -> bool:
        """Fresh (see `_fresh`) and from a draw no trial was made from (no lock needed)."""
        return proposal is not None and self._fresh(proposal.seen) and proposal.draw not in self._drawn

    def _fresh(self, seen: int) -> bool:
        """A proposal made on the study as it was at `seen` is TPE's (not a startup trial's random draw)
        and missed no more changes than the trials in flight allow."""
        tpe_from = self._changes.tpe_from
        return tpe_from is not None and seen >= tpe_from and self._changes.missed(seen) <= self._allowed

    def drawn(self, draw: tuple[int, int]) -> None:
        """A trial was made from this draw, here or in the head."""
        self._drawn.add(draw)

    def _computing(self, proc: _Process) -> bool:
        """Computing a proposal that will be usable."""
        return proc.requested is not None and self._fresh(proc.requested)

    def _coming(self) -> bool:
        """A process that has served is computing a proposal that will be usable, and is not late."""
        return any(self._computing(p) and p.served and time.monotonic() - p.since < LATE_S for p in self._procs)

    def _pop(self, proc: _Process) -> Proposal:
        proposal, proc.proposal = proc.proposal, None
        assert proposal is not None
        return proposal

    def _refresh(self) -> None:
        """Idle processes without a usable proposal compute one: all of them while proposals may miss a
        change, one while none may (two would compute the same inputs for one ask). None before the
        startup trials are done: asks are random draws until then, made in the head."""
        if self._changes.tpe_from is None:
            return
        wanted = len(self._procs) if self._allowed else 1
        usable = sum(self._computing(p) or (p.requested is None and self.usable(p.proposal)) for p in self._procs)
        for proc in self._procs:
            if usable >= wanted:
                return
            if proc.popen is not None and proc.requested is None and not self.usable(proc.proposal):
                self._request(proc)
                usable += 1

    def _request(self, proc: _Process) -> None:
        assert proc.popen is not None and proc.popen.stdin is not None
        lane = proc.index + 1 if self._allowed else 0
        try:
            proc.popen.stdin.write(b"propose %d\n" % lane)
            proc.popen.stdin.flush()
        except OSError:  # it has died: the pool's thread sees its output close
            return
        proc.requested, proc.since = self._changes.count, time.monotonic()

    # -- the pool's thread -------------------------------------------------------------------------

    def _keep(self) -> None:
        """Start the processes, read their proposals, start again those that die; at close, stop them."""
        try:
            with self._cond:
                for proc in self._procs:
                    self._start(proc)
            while not self._closing:
                for key, _ in self._selector.select():
                    if key.data is not None:
                        self._read(key.data)
        finally:
            self._stop_all()

    def _start(self, proc: _Process) -> None:
        """Lock held."""
        code = str(Path(__file__).resolve().parents[1])  # the head's own code, wherever it runs from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([code, os.environ.get("PYTHONPATH", "")])}
        args = [str(self._path), self._study, str(self._seed), str(os.getpid())]
        proc.popen = subprocess.Popen([sys.executable, "-m", "coordinator.ask_pool", *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                      process_group=0)
        self._selector.register(proc.popen.stdout, selectors.EVENT_READ, proc)
        proc.served, proc.proposal, proc.requested = False, None, None
        self._request(proc)

    def _read(self, proc: _Process) -> None:
        assert proc.popen is not None and proc.popen.stdout is not None
        line = proc.popen.stdout.readline()
        with self._cond:
            if line:
                message = json.loads(line)
                proc.proposal = Proposal(message["params"], message["seen"], tuple(message["draw"]))
                proc.served, proc.requested = True, None
                self._refresh()  # it may be too old already
            else:
                self._died(proc)
            self._cond.notify_all()

    def _died(self, proc: _Process) -> None:
        """Lock held."""
        popen = proc.popen
        assert popen is not None and popen.stdin is not None and popen.stdout is not None
        self._selector.unregister(popen.stdout)
        code = popen.wait()
        _close_pipes(popen)
        served, proc.popen, proc.requested, proc.proposal = proc.served, None, None, None
        if self._closing:
            return
        if served and self._restarts > 0:
            self._restarts -= 1
            log.warning("ask process %d exited (status %s); starting it again", proc.index, code)
            self._start(proc)
        else:
            log.warning("ask process %d exited (status %s); the head asks in its place", proc.index, code)

    def _stop_all(self) -> None:
        """An ask process holds nothing worth a goodbye: killed, and reaped."""
        with self._cond:
            popens = [p.popen for p in self._procs if p.popen is not None]
            for proc in self._procs:
                proc.popen, proc.requested, proc.proposal = None, None, None
        for popen in popens:
            popen.kill()
            popen.wait()
            _close_pipes(popen)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _close_pipes(popen: subprocess.Popen) -> None:
    """Close an ask process's pipes. A request written as it died stays in its pipe's buffer (the write
    failed), and closing flushes it again: that raises, once the fd is closed all the same."""
    for pipe in (popen.stdin, popen.stdout):
        assert pipe is not None
        try:
            pipe.close()
        except BrokenPipeError:
            pass


# -- proposing -----------------------------------------------------------------------------------------


def propose(storage: optuna.storages.BaseStorage, study_name: str, sampler: FastTPESampler, dists: dict[str, Any],
            seed: int, lane: int) -> Proposal:
    """What `study.ask(dists)` would suggest for the next trial, without writing anything, its draw
    seeded from `seed` and `lane`: TPE's `_sample_relative` is its `sample_relative` less the write that
    shares the result with other processes, and each parameter it leaves out is sampled as
    Trial._suggest does. A fresh Study object each time: Optuna caches the trials per Study object and
    thread."""
    study = optuna.Study(study_name=study_name, storage=storage, sampler=sampler)
    trials = study.get_trials(deepcopy=False)
    draw = (len(trials), lane)
    sampler.seed_draw(draw_seed(seed, draw))
    trial = optuna.trial.FrozenTrial(
        number=len(trials), state=optuna.trial.TrialState.RUNNING, value=None, datetime_start=None,
        datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
        intermediate_values={}, trial_id=-1)
    sampler.before_trial(study, trial)
    space = sampler.infer_relative_search_space(study, trial)
    relative = sampler._sample_relative(study, trial, space)  # type: ignore[attr-defined]
    params = {name: relative[name] if name in relative else sampler.sample_independent(study, trial, name, dist)
              for name, dist in dists.items()}
    return Proposal(params, changes(trials), draw)


def _warm_up(sampler: FastTPESampler, dists: dict[str, Any]) -> None:
    """One TPE proposal on a throwaway in-memory study of the same space, with a sampler of its own (the
    study's sampler keeps state per study), while TPE's startup trials still run. At 12 trials a process's
    first TPE proposal took 21 ms, a later one 5 ms, and a first one after this warm-up 12 ms: the study's
    first TPE proposal, which a wave of results waits for, no longer pays for the first run of the code."""
    from coordinator.study import STARTUP_TRIALS
    from worker.params import random_params

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize")
    rng = np.random.default_rng(0)
    study.add_trials([optuna.trial.create_trial(params=random_params(rng), distributions=dists, value=float(value))
                      for value in rng.uniform(size=STARTUP_TRIALS + 2)])
    propose(storage, study.study_name, sampler, dists, 0, 0)


def _die_with_parent(parent: int) -> bool:
    """Ask for SIGKILL when the thread that started this process ends; False if it already has."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux; elsewhere the closed pipe
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def main(argv: list[str]) -> int:
    """`python -m coordinator.ask_pool JOURNAL STUDY SEED PARENT_PID`: one proposal per request line
    (`propose LANE`)."""
    path, name, seed, parent = argv
    if not _die_with_parent(int(parent)):
        return 0
    from coordinator.study import distributions, make_sampler, read_only_storage

    storage = read_only_storage(Path(path))
    sampler, dists = make_sampler(int(seed)), distributions()
    _warm_up(make_sampler(0), dists)
    for line in sys.stdin.buffer:
        proposal = propose(storage, name, sampler, dists, int(seed), int(line.split()[1]))
        sys.stdout.write(json.dumps({"params": proposal.params, "seen": proposal.seen, "draw": proposal.draw}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
