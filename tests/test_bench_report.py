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


def test_the_fork_cost_group_measures_each_import_set_in_a_python_of_its_own(monkeypatch: pytest.MonkeyPatch):
    from benchmarks import forks

    monkeypatch.setattr(forks, "IMPORTS", {"nothing": "pass", "rig_server": "import numpy"})
    measured = forks.run_fork_cost(Path("."), repeats=2, forks=3)["trial_process_ms"]
    assert measured["n"] == 2 and measured["forks"] == 3 and measured["min"] > -1e-9  # times, less float rounding
    assert measured["fork_ms"]["n"] == measured["exit_ms"]["n"] == 2
    assert set(measured["by_imports"]) == {"nothing"}
    assert measured["vmas"]["rig_server"] > measured["vmas"]["nothing"] > 0  # numpy maps libraries of its own
