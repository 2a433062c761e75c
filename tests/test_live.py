"""The live view: rendered once in memory, for real under a pseudo-terminal, and the plain lines
a run prints when stdout is a pipe or --no-tui is given."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from coordinator.events import Event, RunState
from coordinator.live import LiveView

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Drives a short run through the CLI's choice of view; argv[1] == "1" stands for --no-tui.
SCRIPT = """
import logging, sys, time
from coordinator.events import Event
from coordinator.live import view_for

with view_for(no_tui=sys.argv[1] == "1") as view:
    for e in (Event("planned", value=2), Event("slot-starting", rig="head", slot=0),
              Event("slot-starting", rig="rig-a", slot=0, gpu=3), Event("slot-ready", rig="head", slot=0),
              Event("slot-ready", rig="rig-a", slot=0, gpu=3),
              Event("started", rig="head", slot=0, task="trial_0000", attempt=1),
              Event("started", rig="rig-a", slot=0, gpu=3, task="trial_0001", attempt=1)):
        view.notify(e)
    time.sleep(0.6)
    logging.getLogger("coordinator").warning("rig-a answers slowly")
    view.notify(Event("finished", rig="head", slot=0, task="trial_0000", attempt=1, value=0.5))
    view.notify(Event("failed", rig="rig-a", slot=0, gpu=3, task="trial_0001", attempt=1, reason="timeout"))
    time.sleep(0.3)
    print("view:", type(view).__name__)
"""


def test_render_shows_slots_progress_best_and_quarantine() -> None:
    state = RunState(total=10)
    now = time.monotonic()
    state.started_at = now - 80
    for e in (Event("slot-starting", rig="head", slot=0, at=now - 80), Event("slot-ready", rig="head", slot=0),
              Event("slot-starting", rig="head", slot=1, at=now - 80), Event("slot-ready", rig="head", slot=1),
              Event("started", rig="head", slot=0, task="trial_0000", attempt=1, at=now - 60),
              Event("finished", rig="head", slot=0, task="trial_0000", attempt=1, value=0.4123, chance=(0.25, 0.05)),
              Event("started", rig="head", slot=1, task="trial_0002", attempt=2, at=now - 12.5),
              Event("started", rig="rig-a", slot=0, gpu=3, task="trial_0001", attempt=1),
              Event("started", rig="rig-a", slot=1, gpu=4, task="trial_0003", attempt=1),
              Event("retried", rig="rig-a", slot=0, gpu=3, task="trial_0001", attempt=1, reason="timeout"),
              Event("quarantined", rig="rig-a", reason="3 failures in a row, last: timeout"),
              Event("retried", rig="rig-a", slot=1, gpu=4, task="trial_0003", attempt=1, reason="cancelled"),
              Event("slot-starting", rig="rig-c", slot=0, at=now - 4.0),
              Event("slot-starting", rig="rig-c", slot=1, at=now - 4.0), Event("slot-ready", rig="rig-c", slot=1),
              Event("slot-lost", rig="rig-b", slot=0, gpu=5,
                    reason="process output ended; stderr: Traceback (most recent call last):\n  File x\n"
                           "ModuleNotFoundError: No module named 'torch'")):
        state.notify(e)
    console = Console(force_terminal=True, file=io.StringIO(), width=160)
    console.print(LiveView(state, console=console))
    lines = [" ".join(line.replace("│", " ").split()) for line in ANSI.sub("", console.file.getvalue()).splitlines()]

    assert "head 0 - idle" in lines
    assert "head 1 - trial_0002 2 12.5s running" in lines
    assert "rig-a 0 3 quarantined" in lines and "rig-a 1 4 quarantined" in lines  # every slot of the rig
    assert "rig-b 0 5 lost" in lines
    assert "rig-c 0 - 4.0s starting" in lines and "rig-c 1 - idle" in lines
    assert not any("-1" in line for line in lines)  # the rig-wide quarantine event is no slot
    # one trial done a minute after the first started (warm-up before it is no trial time): nine more take nine
    assert any("1/10 trials" in line and "elapsed 0:01:20" in line and "ETA 0:09:00" in line for line in lines)
    assert "best 0.412300 (trial_0000): signal (p = 0.00059 for the best of 1 trials)" in lines  # 3.2 s.d. above
    assert "complete 1 failed 0 retried 2" in lines
    assert "warming up: rig-c 1/2 slots ready" in lines
    assert ("last failure: - on rig-b/slot0: process output ended; stderr: Traceback (most recent call last):"
            " ... ModuleNotFoundError: No module named 'torch'") in lines
    assert "quarantined rig-a: 3 failures in a row, last: timeout" in lines


def run_script(no_tui: bool, terminal: bool) -> str:
    """Run SCRIPT with stdout and stderr on a pseudo-terminal (or a pipe); everything it wrote."""
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    argv = [sys.executable, "-c", SCRIPT, "1" if no_tui else "0"]
    if not terminal:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=True)
        return done.stdout + done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not select.select([master], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=10) == 0
    return b"".join(chunks).decode()


def test_live_view_on_a_real_terminal() -> None:
    raw = run_script(no_tui=False, terminal=True)
    text = ANSI.sub("", raw)
    assert raw.count("\x1b[") > 10  # cursor movement and colour: a live display, not lines
    assert "view: LiveView" in text
    assert re.search(r"rig-a\s*│\s*0\s*│\s*3\s*│\s*trial_0001\s*│\s*1\s*│\s*[\d.]+s\s*│\s*running", text)
    assert "rig-a answers slowly" in text  # the log line, through the live view's console
    assert "best 0.500000 (trial_0000)" in text and "failed 1" in text


@pytest.mark.parametrize(("no_tui", "terminal"), [(False, False), (True, True)])
def test_plain_lines_off_a_terminal_or_with_no_tui(no_tui: bool, terminal: bool) -> None:
    text = run_script(no_tui, terminal).replace("\r\n", "\n")
    assert "\x1b[" not in text
    assert "view: PlainLines" in text
    stamp = r"\d\d:\d\d:\d\d"
    for line in (r"\[0/2\] planned 2 trials", r"\[0/2\] slot-starting head/slot0",
                 r"\[0/2\] slot-ready head/slot0 \(1/1 slots of head ready\)",
                 r"\[0/2\] started rig-a/slot0/gpu3 trial_0001 attempt 1",
                 r"\[1/2\] finished head/slot0 trial_0000 attempt 1 accuracy=0\.500000",
                 r"\[2/2\] failed rig-a/slot0/gpu3 trial_0001 attempt 1 reason: timeout"):
        assert re.search(f"^{stamp} {line}$", text, re.MULTILINE), line
    assert "rig-a answers slowly\n" in text
