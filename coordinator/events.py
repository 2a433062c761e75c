"""What the scheduler tells its watchers: one small event type and the state they add up to.

The scheduler only emits events; views (plain lines, the rich live table) and the report derive
everything they show from `RunState`, which is rebuilt from events alone.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TextIO

from coordinator.chance import Verdict, best_of


class EventKind(StrEnum):
    PLANNED = "planned"  # value: the number of tasks the run will start
    SLOT_STARTING = "slot-starting"
    SLOT_READY = "slot-ready"
    STARTED = "started"
    FINISHED = "finished"
    RETRIED = "retried"
    FAILED = "failed"
    LEFT = "left"  # an attempt ended as the run stopped: its task is left for a resume
    QUARANTINED = "quarantined"
    SLOT_LOST = "slot-lost"
    STOPPING = "stopping"  # the run stops dispatching; reason: why
    PHASE = "phase"  # a phase of more tasks begins (value: how many); reason: what it does


class SlotState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    RUNNING = "running"
    LOST = "lost"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    rig: str = ""
    slot: int = -1
    gpu: int | None = None
    task: str = ""
    attempt: int = 0
    value: float | None = None
    reason: str = ""
    chance: tuple[float, float] | None = None  # a finished task's chance level: its value's null mean and s.d.
    at: float = field(default_factory=time.monotonic)


class Watcher(Protocol):
    def notify(self, event: Event) -> None: ...


def one_line(text: str) -> str:
    """A reason on one line: its first line, and its last when there are more (the exception line of a
    traceback that a dying process left in its stderr)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if len(lines) <= 1 else f"{lines[0]} ... {lines[-1]}"


@dataclass
class SlotView:
    rig: str
    slot: int
    gpu: int | None
    task: str = ""
    attempt: int = 0
    since: float = 0.0  # when its current state began
    state: SlotState = SlotState.STARTING


@dataclass(frozen=True)
class LastFailure:
    task: str
    where: str
    reason: str


@dataclass
class RunState:
    """Everything a view shows, derived from events (thread-safe to update and read)."""

    total: int = 0
    started_at: float = field(default_factory=time.monotonic)
    first_trial_at: float | None = None  # the ETA counts from here: slot warm-up is no trial time
    slots: dict[tuple[str, int], SlotView] = field(default_factory=dict)
    complete: int = 0
    failed: int = 0
    retried: int = 0
    unfinished: int = 0
    best: tuple[float, str] | None = None
    chances: list[tuple[int, float, float, float]] = field(default_factory=list)  # (n, value, null mean, sd)
    phase: str = ""  # what the phase after the search does ("" during the search)
    confirmed: dict[str, float] = field(default_factory=dict)  # a confirmation's task -> its value
    quarantined: dict[str, str] = field(default_factory=dict)
    last_failure: LastFailure | None = None
    stopping: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def notify(self, e: Event) -> None:
        with self.lock:
            if e.kind == EventKind.PLANNED:
                self.total = int(e.value or 0)
            elif e.kind == EventKind.PHASE:
                self.total, self.phase = self.total + int(e.value or 0), e.reason
            elif e.kind == EventKind.STOPPING:
                self.stopping = e.reason
            elif e.kind == EventKind.QUARANTINED:
                self.quarantined[e.rig] = e.reason
                for (rig, _), other in self.slots.items():
                    if rig == e.rig and other.state != SlotState.LOST:
                        other.state, other.since = SlotState.QUARANTINED, e.at
            else:
                self._slot_event(e, self.slots.setdefault((e.rig, e.slot), SlotView(e.rig, e.slot, e.gpu, since=e.at)))

    def _slot_event(self, e: Event, view: SlotView) -> None:
        """Called with the lock held: what an event of one slot changes."""
        if e.kind in (EventKind.RETRIED, EventKind.FAILED, EventKind.SLOT_LOST) or (
                e.kind == EventKind.LEFT and not e.reason.startswith("cancelled")):
            where = f"{e.rig}/slot{e.slot}"
            self.last_failure = LastFailure(e.task, where, one_line(e.reason))
        if e.kind == EventKind.SLOT_STARTING:
            view.state, view.since = SlotState.STARTING, e.at
        elif e.kind == EventKind.SLOT_LOST:
            view.state, view.since = SlotState.LOST, e.at
        elif e.kind == EventKind.STARTED:
            view.task, view.attempt, view.since, view.state = e.task, e.attempt, e.at, SlotState.RUNNING
            self.first_trial_at = e.at if self.first_trial_at is None else self.first_trial_at
        elif e.kind in (EventKind.SLOT_READY, EventKind.FINISHED, EventKind.RETRIED, EventKind.FAILED,
                        EventKind.LEFT):
            idle = SlotState.QUARANTINED if e.rig in self.quarantined else SlotState.IDLE
            view.task, view.state, view.since = "", idle, e.at
            self._count(e)

    def _count(self, e: Event) -> None:
        if e.kind == EventKind.FINISHED:
            self.complete += 1
            if self.phase and e.value is not None:
                self.confirmed[e.task] = e.value
            elif e.value is not None:
                if self.best is None or e.value > self.best[0]:
                    self.best = (e.value, e.task)
                if e.chance is not None:
                    self.chances.append((len(self.chances), e.value, *e.chance))
        elif e.kind == EventKind.RETRIED:
            self.retried += 1
        elif e.kind == EventKind.FAILED:
            self.failed += 1
        elif e.kind == EventKind.LEFT:
            self.unfinished += 1

    @property
    def done(self) -> int:
        return self.complete + self.failed

    def verdict(self) -> Verdict:
        """The search's best so far against chance for the best of its trials; called with the lock held."""
        return best_of(self.chances, "value")

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace since the first trial started; None before a trial is done."""
        if not self.done or not self.total or self.first_trial_at is None:
            return None
        return (now - self.first_trial_at) / self.done * max(self.total - self.done, 0)

    def rig_slots(self, rig: str) -> tuple[int, int]:
        """(slots ready, slots) of a rig; called with the lock held."""
        views = [view for (name, slot), view in self.slots.items() if name == rig and slot >= 0]
        return sum(v.state in (SlotState.IDLE, SlotState.RUNNING) for v in views), len(views)

    def warming(self) -> dict[str, tuple[int, int]]:
        """rig -> (slots ready, slots) for every rig with a slot still starting; called with the lock held."""
        return {rig: self.rig_slots(rig) for rig in sorted({v.rig for v in self.slots.values()
                                                            if v.state == SlotState.STARTING})}


class PlainLines:
    """One line per event, for logs and non-terminal output: the time, the trials done of the total,
    what happened and where."""

    def __init__(self, stream: TextIO | None = None, state: RunState | None = None):
        self.stream = stream or sys.stdout
        self.state = state or RunState()
        self.lock = threading.Lock()

    def notify(self, e: Event) -> None:
        self.state.notify(e)
        with self.state.lock:
            progress = f"[{self.state.done}/{self.state.total or '?'}]"
            ready, slots = self.state.rig_slots(e.rig)
        if e.kind == EventKind.PLANNED:
            text = f"planned {int(e.value or 0)} trials"
        elif e.kind == EventKind.PHASE:
            text = e.reason
        elif e.kind == EventKind.STOPPING:
            text = f"stopping: {one_line(e.reason)}"
        else:
            text = self._describe(e) + (f" ({ready}/{slots} slots of {e.rig} ready)"
                                        if e.kind == EventKind.SLOT_READY else "")
        with self.lock:
            print(f"{time.strftime('%H:%M:%S')} {progress} {text}", file=self.stream, flush=True)

    @staticmethod
    def _describe(e: Event) -> str:
        where = e.rig if e.slot < 0 else f"{e.rig}/slot{e.slot}" + (f"/gpu{e.gpu}" if e.gpu is not None else "")
        parts: list[Any] = [e.kind, where]
        if e.task:
            parts.append(f"{e.task} attempt {e.attempt}")
        if e.value is not None:
            parts.append(f"accuracy={e.value:.6f}")
        if e.reason:
            parts.append(f"reason: {one_line(e.reason)}")
        return " ".join(str(p) for p in parts)


class Fanout:
    """Several watchers behind one."""

    def __init__(self, *watchers: Watcher):
        self.watchers = watchers

    def notify(self, event: Event) -> None:
        for w in self.watchers:
            w.notify(event)
