"""The data the benchmarks measure on: the `make data` folders, or the same written afresh."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import REPO
from worker import demo

DEMO, NULL = REPO / "data" / "demo", REPO / "data" / "demo-null"  # `make data`: Step 1 folders, proposal scale


def demo_folders(work: Path) -> tuple[Path, Path]:
    """The sieve-made demo at the proposal's scale and its null variant (the same survivors, uniform draws)."""
    if (DEMO / demo.TRUTH).is_file() and (NULL / demo.TRUTH).is_file():
        return DEMO, NULL
    made = demo.make("demo")
    demo.write(made, work / "demo")
    demo.write(made, work / "demo-null", null=True)
    return work / "demo", work / "demo-null"
