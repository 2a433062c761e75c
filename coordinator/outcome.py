"""How an attempt ended, in words the whole coordinator shares: one-word reasons, the failure record
kept for each failed attempt, and the outcome a slot hands the scheduler.

Reasons are string-valued, so the study's attributes, the archives and the report hold the same words
the code compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    ERROR = "error"  # the worker reported an error
    EXIT = "exit"  # non-zero exit beside a success record, or a script job's non-zero exit
    TIMEOUT = "timeout"
    LOST = "lost"  # the worker or the connection died
    MISSING = "missing"  # no result file
    CORRUPT = "corrupt"  # the result is not JSON
    INVALID = "invalid"  # the result broke the contract
    PROTOCOL = "protocol"  # the worker answered something other than "done"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # the worker refused the job: no attempt of it can succeed until that is fixed
    INTERRUPTED = "interrupted"  # the coordinator stopped during the attempt
    UNREACHABLE = "unreachable"
    HOST_KEY = "host-key"
    AUTH = "auth"
    IO = "io"


@dataclass(frozen=True)
class Failure:
    """One failed attempt: where it ran and why it failed. Stored in the study as a plain object."""

    attempt: int
    rig: str
    reason: Reason
    detail: str = ""

    def __str__(self) -> str:
        return f"attempt {self.attempt} on {self.rig}: {self.reason}" + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "rig": self.rig, "reason": str(self.reason), "detail": self.detail}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Failure:
        """A failure as the study stored it (a reason no longer known stays its word)."""
        reason = obj["reason"]
        return cls(obj["attempt"], obj["rig"], Reason(reason) if reason in set(Reason) else reason, obj["detail"])


@dataclass(frozen=True)
class Outcome:
    ok: bool
    value: float | None = None
    reason: Reason | None = None  # None on success
    detail: str = ""
    record: dict | None = None  # the validated result, on success and where one exists on failure
    chance: tuple[float, float] | None = None  # the value's chance level (null mean, s.d.), where the kind has one

    def describe(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)
