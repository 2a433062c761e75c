"""SIGINT and SIGTERM as a request to stop a run cleanly.

The handler only notes the signal; the run notices it where stopping is safe (between its steps, and in
the scheduler's wait), so no journal line or file is cut off halfway. A second signal stops at once
(KeyboardInterrupt): for a run that is slow to wind down.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """`with StopSignals() as stop:` catches SIGINT and SIGTERM; `stop.reason()` says whether one came.
    Must be entered in the main thread (Python's rule for signal handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {sig: signal.signal(sig, self._note) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def reason(self) -> str | None:
        """'interrupted by SIGINT' once a signal came; None before."""
        return None if self.signum is None else f"interrupted by {signal.Signals(self.signum).name}"

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process a signal ended: 128 + the signal's number."""
        return 128 + (self.signum or signal.SIGINT)
