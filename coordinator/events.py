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


class EventKind(StrEnum):
    PLANNED = "planned"  # value: the number of tasks the run will start
    SLOT_READY = "slot-ready"
    STARTED = "started"
    FINISHED = "finished"
    RETRIED = "retried"
    FAILED = "failed"
    QUARANTINED = "quarantined"
    SLOT_LOST = "slot-lost"


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
    at: float = field(default_factory=time.monotonic)


class Watcher(Protocol):
    def notify(self, event: Event) -> None: ...


@dataclass
class SlotView:
    rig: str
    slot: int
    gpu: int | None
    task: str = ""
    attempt: int = 0
    since: float = 0.0
    state: SlotState = SlotState.STARTING


@dataclass
class RunState:
    """Everything a view shows, derived from events (thread-safe to update and read)."""

    total: int = 0
    started_at: float = field(default_factory=time.monotonic)
    slots: dict[tuple[str, int], SlotView] = field(default_factory=dict)
    complete: int = 0
    failed: int = 0
    retried: int = 0
    best: tuple[float, str] | None = None
    quarantined: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def notify(self, e: Event) -> None:
        with self.lock:
            if e.kind == EventKind.PLANNED:
                self.total = int(e.value or 0)
                return
            if e.kind == EventKind.QUARANTINED:
                self.quarantined[e.rig] = e.reason
                for (rig, _), other in self.slots.items():
                    if rig == e.rig:
                        other.state = SlotState.QUARANTINED
                return
            view = self.slots.setdefault((e.rig, e.slot), SlotView(e.rig, e.slot, e.gpu))
            if e.kind == EventKind.SLOT_READY:
                view.state = SlotState.IDLE
            elif e.kind == EventKind.STARTED:
                view.task, view.attempt, view.since, view.state = e.task, e.attempt, e.at, SlotState.RUNNING
            elif e.kind in (EventKind.FINISHED, EventKind.RETRIED, EventKind.FAILED):
                view.task, view.state = "", SlotState.IDLE
                if e.kind == EventKind.FINISHED:
                    self.complete += 1
                    if e.value is not None and (self.best is None or e.value > self.best[0]):
                        self.best = (e.value, e.task)
                elif e.kind == EventKind.RETRIED:
                    self.retried += 1
                else:
                    self.failed += 1
            elif e.kind == EventKind.SLOT_LOST:
                view.state = SlotState.LOST

    @property
    def done(self) -> int:
        return self.complete + self.failed


class PlainLines:
    """One line per event, for logs and non-terminal output."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def notify(self, e: Event) -> None:
        if e.kind == EventKind.SLOT_READY:
            return
        if e.kind == EventKind.PLANNED:
            with self.lock:
                print(f"planned {int(e.value or 0)} trials", file=self.stream, flush=True)
            return
        where = e.rig if e.slot < 0 else f"{e.rig}/slot{e.slot}" + (f"/gpu{e.gpu}" if e.gpu is not None else "")
        parts: list[Any] = [e.kind, where]
        if e.task:
            parts.append(f"{e.task} attempt {e.attempt}")
        if e.value is not None:
            parts.append(f"accuracy={e.value:.6f}")
        if e.reason:
            parts.append(f"reason: {e.reason}")
        with self.lock:
            print(" ".join(str(p) for p in parts), file=self.stream, flush=True)


class Fanout:
    """Several watchers behind one."""

    def __init__(self, *watchers: Watcher):
        self.watchers = watchers

    def notify(self, event: Event) -> None:
        for w in self.watchers:
            w.notify(event)
