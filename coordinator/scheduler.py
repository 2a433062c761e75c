"""The scheduler's whole policy: slots, retries, quarantine. Nothing here knows SSH or Optuna.

One thread per slot. A free slot takes a retry if it should, else asks the source for a new task
(one ask at a time, outside the lock), runs it, and reports the outcome at once: no batches, no
barriers, no sleeps on the hot path.
A failed attempt goes back to the queue with the next attempt number and is taken by a head slot
(while one is up or starting), until its attempts run out; then the source is told it failed, with why.
A rig whose attempts fail `quarantine_after` times in a row is left out for the rest of the run
and its running attempts are cancelled and retried. The head is never quarantined: it is where
retries go.
A Source may come in phases (`Phases`): when one has nothing left to ask, running or waiting, the next
begins on the same warm slots.
Stopping leaves work for a resume instead of failing it: on a stop request (SIGINT, SIGTERM) running
attempts are cancelled; an attempt the worker refuses (no attempt of it could succeed: bad input,
data that does not match its hash, stale code, a missing dependency) stops dispatch while running
attempts finish; and retries no slot is left to run wait too. None of these is told to the Source as
final: the study keeps such trials open, and a resume runs them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from coordinator.events import Event, EventKind, Watcher
from coordinator.inventory import Rig
from coordinator.outcome import Failure, Outcome, Reason

P = TypeVar("P")


@dataclass
class Task(Generic[P]):
    """One unit of work from a Source, with the Source's own payload (a Step 2 trial, a script job)."""

    key: str
    payload: P
    attempt: int = 1
    first_attempt: int = 1  # a resumed trial numbers on from its earlier runs' attempts; the budget is per run
    failures: list[Failure] = field(default_factory=list)

    def fail(self, rig: str, outcome: Outcome) -> Failure:
        """Record the current attempt's failure: the one place failure records are made."""
        failure = Failure(self.attempt, rig, Reason(outcome.reason), outcome.detail)
        self.failures.append(failure)
        return failure

    def failure_text(self) -> str:
        return "; ".join(map(str, self.failures))


class Source(Protocol):
    """Where tasks come from and where outcomes go (the Optuna study, a jobs file)."""

    def next_task(self) -> Task | None:
        """A new task, or None when no more should be started."""

    def succeeded(self, task: Task, outcome: Outcome, rig: Rig) -> None: ...

    def attempt_failed(self, task: Task, outcome: Outcome, rig: Rig | None, final: bool) -> None:
        """An attempt failed (rig None: no slot was left to run it). When `final`, the task is over:
        `task.failures` holds every attempt's failure."""


class PhasedSource(Source, Protocol):
    def begin(self) -> bool:
        """Called as the source's phase begins (the one before it has nothing left running or waiting):
        gather its tasks; False when it has none and the next phase should begin."""


class Phases:
    """Sources one after another over the same slots: the scheduler moves to the next when the current one
    has nothing left to ask, running or waiting. Outcomes go to the source whose phase it is."""

    def __init__(self, first: Source, *later: PhasedSource):
        self.sources: list[Source] = [first, *later]
        self.current = 0

    @property
    def source(self) -> Source:
        return self.sources[self.current]

    def next_task(self) -> Task | None:
        return self.source.next_task()

    def next_phase(self) -> bool:
        """Begin the next phase that has work; False when none is left."""
        while self.current + 1 < len(self.sources):
            self.current += 1
            if self.source.begin():
                return True
        return False

    def succeeded(self, task: Task, outcome: Outcome, rig: Rig) -> None:
        self.source.succeeded(task, outcome, rig)

    def attempt_failed(self, task: Task, outcome: Outcome, rig: Rig | None, final: bool) -> None:
        self.source.attempt_failed(task, outcome, rig, final)


class Executor(Protocol):
    """Runs tasks on one slot: one (rig, GPU)."""

    rig: Rig
    index: int

    def start(self) -> None:
        """Get the slot ready (warm worker, connection); raise on failure."""

    def execute(self, task: Task) -> Outcome:
        """Run one attempt. Never raises: every failure is an Outcome. Restarts a worker that died."""

    def cancel(self) -> None:
        """Abort the running attempt from another thread (its execute returns a failure)."""

    def close(self) -> None: ...


@dataclass
class Tally:
    complete: int = 0
    failed: int = 0
    retried: int = 0  # attempts that failed and were run again in this run


@dataclass
class Summary:
    complete: int = 0
    failed: int = 0
    retried: int = 0  # attempts that failed and were run again in this run
    phases: list[Tally] = field(default_factory=lambda: [Tally()])  # the same counts, phase by phase
    quarantined: dict[str, str] = field(default_factory=dict)
    lost_slots: int = 0
    no_slot_started: dict[str, str] = field(default_factory=dict)  # rig -> why its last slot did not start
    unfinished: int = 0  # tasks taken but neither complete nor failed: a resume runs them
    stopped: str = ""  # why the run stopped before its tasks ran out ("" when it did not)

    @property
    def rigs_out(self) -> dict[str, str]:
        """Every rig the run lost, with why."""
        return {**self.no_slot_started, **self.quarantined}


class Scheduler:
    def __init__(self, source: Source, executors: list[Executor], watcher: Watcher, *,
                 max_attempts: int = 2, quarantine_after: int = 3,
                 stop_requested: Callable[[], str | None] = lambda: None):
        if max_attempts < 1 or quarantine_after < 1:
            raise ValueError(f"attempts per task ({max_attempts}) and failures before quarantine"
                             f" ({quarantine_after}) must be at least 1")
        self.source, self.executors, self.watcher = source, executors, watcher
        self.max_attempts, self.quarantine_after = max_attempts, quarantine_after
        self.stop_requested = stop_requested  # polled while the run waits: why to stop, or None
        self.slots_of = Counter(ex.rig.name for ex in executors)
        self.not_started: Counter[str] = Counter()
        self.cond = threading.Condition()
        self.queue: deque[Task] = deque()  # retries, and tasks whose slot's rig was quarantined as they were asked
        self.in_flight = 0
        self.exhausted = False
        self.asking = False  # a slot is asking the source for a task
        self.stopping = False
        self.streak: dict[str, int] = {}
        self.alive = {id(ex) for ex in executors}  # ids of executors whose slot is up or still starting
        self.summary = Summary()

    # -- the loop of one slot ------------------------------------------------------------------

    def run(self) -> Summary:
        threads = [threading.Thread(target=self._slot, args=(ex,), name=f"slot-{ex.rig.name}-{ex.index}",
                                    daemon=True) for ex in self.executors]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
                    why = self.stop_requested()
                    if why is not None and not self.stopping:
                        self.stop(why)
        except KeyboardInterrupt:  # asked to stop at once: cancel, and leave the rest to resume
            self.stop("interrupted")
            raise
        with self.cond:
            if self.queue:  # every slot is gone (or the run stopped): a resume runs what waits
                self.summary.unfinished += len(self.queue)
                self.summary.stopped = self.summary.stopped or f"no slot left to run {len(self.queue)} waiting tasks"
                self.queue.clear()
        return self.summary

    def stop(self, why: str, cancel: bool = True) -> None:
        """Stop dispatching (`why` goes to the summary and the watchers); with `cancel`, abort the running
        attempts too. Whatever did not finish stays unreported: a resume runs it."""
        with self.cond:
            first, self.stopping = not self.stopping, True
            if first:
                self.summary.stopped = why
            self.cond.notify_all()
        if first:
            self.watcher.notify(Event(EventKind.STOPPING, reason=why))
        if cancel:
            for ex in self.executors:
                ex.cancel()

    def _slot(self, ex: Executor) -> None:
        try:
            if not self._start(ex):
                return
            while (task := self._take(ex)) is not None:
                self._emit(EventKind.STARTED, ex, task)
                outcome = ex.execute(task)
                self._settle(ex, task, outcome)
        finally:
            ex.close()
            with self.cond:
                self.alive.discard(id(ex))
                self.cond.notify_all()

    def _start(self, ex: Executor) -> bool:
        self._emit(EventKind.SLOT_STARTING, ex)
        if ex.rig.stagger_s:
            time.sleep(ex.rig.stagger_s * ex.index)
        try:
            ex.start()
        except Exception as exc:  # noqa: BLE001 - any start failure leaves the slot out, with why
            self._emit(EventKind.SLOT_LOST, ex, reason=str(exc))
            with self.cond:
                self.summary.lost_slots += 1
                self.not_started[ex.rig.name] += 1
                if self.not_started[ex.rig.name] == self.slots_of[ex.rig.name]:
                    self.summary.no_slot_started[ex.rig.name] = f"no slot started, the last: {exc}"
                quarantined = self._count_failure(ex.rig, f"slot failed to start: {exc}")
            self._cancel_rig(quarantined)
            return False
        with self.cond:
            if self.stopping or ex.rig.name in self.summary.quarantined:
                return False
        self._emit(EventKind.SLOT_READY, ex)
        return True

    def _take(self, ex: Executor) -> Task | None:
        with self.cond:
            while True:
                if self.stopping or ex.rig.name in self.summary.quarantined:
                    return None
                if self.queue and self._may_take_queued(ex):
                    self.in_flight += 1
                    return self.queue.popleft()
                if not self.exhausted and not self.asking:
                    self.asking = True
                    self.in_flight += 1  # the task being asked: no slot may conclude the run is over
                    break
                if self.in_flight == 0 and not self.queue:
                    if self.exhausted and getattr(self.source, "next_phase", lambda: False)():
                        self.exhausted = False  # the same slots, the next phase's tasks
                        self.summary.phases.append(Tally())
                        continue
                    self.cond.notify_all()
                    return None
                self.cond.wait()
        return self._ask(ex)

    def _ask(self, ex: Executor) -> Task | None:
        """A new task from the source, asked outside the lock: an ask (Optuna's, tens of ms) must not
        hold up the other slots' outcomes and retries. One ask at a time."""
        try:
            task = self.source.next_task()
        except BaseException:
            with self.cond:
                self.asking = False
                self.in_flight -= 1
                self.cond.notify_all()
            raise
        with self.cond:
            self.asking, self.exhausted = False, task is None
            self.cond.notify_all()
            if task is not None and not self.stopping and ex.rig.name not in self.summary.quarantined:
                return task
            if task is not None and not self.stopping:  # this slot's rig was quarantined meanwhile
                self.queue.appendleft(task)
            elif task is not None:  # stopped meanwhile: the task stays unreported (resume finds it)
                self.summary.unfinished += 1
            self.in_flight -= 1
        return self._take(ex)

    def _may_take_queued(self, ex: Executor) -> bool:
        """Retries run on the head while any head slot is up or starting (a rig that fails before the head
        is ready must not take its own retry), anywhere else otherwise."""
        if ex.rig.local:
            return True
        return not any(id(other) in self.alive for other in self.executors if other.rig.local)

    # -- outcomes ------------------------------------------------------------------------------

    def _settle(self, ex: Executor, task: Task, outcome: Outcome) -> None:
        if outcome.ok:
            self.source.succeeded(task, outcome, ex.rig)
            self._emit(EventKind.FINISHED, ex, task, value=outcome.value, chance=outcome.chance)
            with self.cond:
                self.summary.complete += 1
                self.summary.phases[-1].complete += 1
                self.streak[ex.rig.name] = 0
                self.in_flight -= 1
                self.cond.notify_all()
            return
        with self.cond:
            stopping = self.stopping
        if stopping and outcome.reason == Reason.CANCELLED:  # stopped with the run: resume finds it
            self._leave(ex, task, "cancelled: the run is stopping")
            return
        task.fail(ex.rig.name, outcome)
        refused = outcome.reason == Reason.REFUSED
        final = not refused and task.attempt - task.first_attempt + 1 >= self.max_attempts
        self.source.attempt_failed(task, outcome, ex.rig, final)
        if refused:  # first stop dispatching, so that no slot takes a new task meanwhile
            self.stop(f"{task.key} attempt {task.attempt} on {ex.rig.name}: {outcome.describe()}: no attempt"
                      " can succeed until that is fixed", cancel=False)
        if not final and (refused or stopping):
            self._leave(ex, task, outcome.describe())
            return
        self._emit(EventKind.FAILED if final else EventKind.RETRIED, ex, task, reason=outcome.describe())
        with self.cond:
            self.summary.failed += final
            self.summary.phases[-1].failed += final
            quarantined = outcome.reason != Reason.CANCELLED and self._count_failure(ex.rig, outcome.describe())
            if not final:
                task.attempt += 1
                self.queue.append(task)
                self.summary.retried += 1
                self.summary.phases[-1].retried += 1
            self.in_flight -= 1
            self.cond.notify_all()
        self._cancel_rig(quarantined)

    def _leave(self, ex: Executor, task: Task, why: str) -> None:
        """An attempt ended while the run stops: its task is left unfinished, for a resume."""
        self._emit(EventKind.LEFT, ex, task, reason=why)
        with self.cond:
            self.summary.unfinished += 1
            self.in_flight -= 1
            self.cond.notify_all()

    def _count_failure(self, rig: Rig, why: str) -> str | None:
        """Called with the lock held. Returns the rig's name when this failure quarantines it."""
        self.streak[rig.name] = self.streak.get(rig.name, 0) + 1
        if rig.local or rig.name in self.summary.quarantined or self.streak[rig.name] < self.quarantine_after:
            return None
        reason = f"{self.streak[rig.name]} failures in a row, last: {why}"
        self.summary.quarantined[rig.name] = reason
        self.watcher.notify(Event(EventKind.QUARANTINED, rig=rig.name, reason=reason))
        self.cond.notify_all()
        return rig.name

    def _cancel_rig(self, name: str | None) -> None:
        """Cancel the running attempts of a rig just quarantined; they come back as retries."""
        for ex in self.executors:
            if name is not None and ex.rig.name == name:
                ex.cancel()

    def _emit(self, kind: EventKind, ex: Executor, task: Task | None = None, value: float | None = None,
              reason: str = "", chance: tuple[float, float] | None = None) -> None:
        self.watcher.notify(Event(kind, rig=ex.rig.name, slot=ex.index, gpu=ex.rig.slot_gpu(ex.index),
                                  task=task.key if task else "", attempt=task.attempt if task else 0,
                                  value=value, reason=reason, chance=chance))
