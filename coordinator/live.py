"""The operator's live view: one row per slot (starting, idle, running, lost or quarantined), progress
with an ETA, the best value so far, counts, the rigs still warming up, the last failure and quarantined
rigs, redrawn from `RunState` about four times a second.

The view holds no state of its own: every refresh rebuilds the picture from the RunState, so what
it shows is always what the events added up to. Off a terminal (logs, pipes) or with `--no-tui`
the run prints one plain line per event instead.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.logging import RichHandler
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from coordinator.events import Event, PlainLines, RunState, SlotState, Watcher, one_line

STATE_STYLES = {SlotState.RUNNING: "green", SlotState.IDLE: "dim", SlotState.STARTING: "yellow",
                SlotState.LOST: "red", SlotState.QUARANTINED: "red"}


def clock(seconds: float) -> str:
    """H:MM:SS, the way an operator reads a duration at a glance."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class LiveView:
    """A rich Live over a RunState. It is the run's Watcher: events feed the state, the Live's own
    thread redraws. Log records go through the same console, so they print above the view instead
    of tearing it."""

    def __init__(self, state: RunState, console: Console | None = None):
        self.state = state
        self.console = console or Console()
        self.live = Live(self, console=self.console, refresh_per_second=4)
        self.handler = RichHandler(console=self.console, show_path=False)

    def notify(self, event: Event) -> None:
        self.state.notify(event)

    def __enter__(self) -> LiveView:
        logging.getLogger().addHandler(self.handler)
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()
        logging.getLogger().removeHandler(self.handler)

    def __rich__(self) -> RenderableType:
        now = time.monotonic()
        s = self.state
        with s.lock:
            slots = [(key, view.gpu, view.task, view.attempt, view.since, view.state)
                     for key, view in sorted(s.slots.items()) if key[1] >= 0]  # slot -1: a rig-wide event
            done, complete, failed, retried, total = s.done, s.complete, s.failed, s.retried, s.total
            best, quarantined, elapsed, eta = s.best, dict(s.quarantined), now - s.started_at, s.eta(now)
            warming, last, stopping, unfinished = s.warming(), s.last_failure, s.stopping, s.unfinished
            verdict, phase, confirmed = s.verdict(), s.phase, dict(s.confirmed)

        table = Table("rig", "slot", "GPU", "trial", "attempt", "elapsed", "state", expand=False)
        for (rig, slot), gpu, task, attempt, since, state in slots:
            running = state == SlotState.RUNNING
            timed = state in (SlotState.RUNNING, SlotState.STARTING)
            table.add_row(rig, str(slot), "-" if gpu is None else str(gpu), task if running else "",
                          str(attempt) if running else "", f"{now - since:.1f}s" if timed else "",
                          Text(state, style=STATE_STYLES.get(state, "")))

        progress = Table.grid(padding=(0, 1))
        progress.add_row(ProgressBar(total=total or None, completed=done, width=40),
                         f"{done}/{total or '?'} trials", f"elapsed {clock(elapsed)}",
                         f"ETA {clock(eta) if eta is not None else '-'}")
        best_text = "best -" if not best else f"best {best[0]:.6f} ({best[1]})" + (
            f": {verdict.words()}" if verdict.p_value is not None else "")
        counts = f"complete {complete}   failed {failed}   retried {retried}"
        lines: list[RenderableType] = [
            table, progress, Text(best_text, style="bold green" if verdict.signal else "bold"),
            Text(counts + (f"   left for resume {unfinished}" if unfinished else ""))]
        if phase:
            done_text = ", ".join(f"{task} {value:.4f}" for task, value in sorted(confirmed.items()))
            lines.append(Text(f"{phase}{': ' + done_text if done_text else ''}", style="cyan"))
        if warming:
            lines.append(Text("warming up: " + ", ".join(f"{rig} {ready}/{count} slots ready"
                                                         for rig, (ready, count) in warming.items()), style="yellow"))
        if last is not None:
            lines.append(Text(f"last failure: {last.task or '-'} on {last.where}: {last.reason}", style="red"))
        lines += [Text(f"quarantined {rig}: {one_line(why)}", style="red") for rig, why in sorted(quarantined.items())]
        if stopping:
            lines.append(Text(f"stopping: {one_line(stopping)}", style="bold red"))
        return Group(*lines)


def view_for(no_tui: bool = False) -> AbstractContextManager[Watcher]:
    """The run's watcher: the live view on a terminal, plain lines when stdout is not one or with
    --no-tui. Use it as `with view_for() as view:`; the run's "planned" event sets the total."""
    if sys.stdout.isatty() and not no_tui:
        return LiveView(RunState())
    return nullcontext(PlainLines())
