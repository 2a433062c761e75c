"""The benchmark page: each group says how fast the machine was just before it ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report


def test_each_group_carries_the_reference_work_timed_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(report, "PAGE", tmp_path / "BENCHMARKS.md")
    old = report.figure([1.0, 2.0], "s", group="old", measured="2026-01-01T00:00:00+00:00")  # from before the reference
    report.RESULTS.write_text(json.dumps({"meta": {}, "old_figure": old}))
    docs = {"old": "An earlier group.", "new": "This group."}
    report.save({"new": {"new_figure": report.figure([3.0], "ms")}}, {"new": 1.0}, docs, 0.1, {"new": 12.5})
    data = json.loads(report.RESULTS.read_text())
    assert data["new_figure"]["reference_ms"] == 12.5 and "reference_ms" not in data["old_figure"]
    page = report.PAGE.read_text()
    assert "the reference work took 12.5 ms." in page
    assert "Measured 2026-01-01T00:00:00+00:00." in page
    assert "reference_ms 12.5" not in page  # not listed as one of the figure's settings
