"""`coordinator report` on small real studies (journal + archive) with fabricated trial records."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from coordinator import cli
from coordinator.report import compare_null, load_study, report, summarize
from coordinator.results import Archive
from coordinator.study import Study, storage_path
from worker import contract
from worker.params import SCORER_SPACE

POOL, SAMPLE = 2_000, 150


def planted(params: dict) -> float:
    """An objective only residue_mod_1 moves: every other parameter is inert."""
    return (params["residue_mod_1"] - 5) / 20


def make_study(root: Path, name: str, n: int, value: Callable[[dict], float] = planted,
               fail: tuple[int, ...] = (), retried: tuple[int, ...] = ()) -> dict[int, list[int]]:
    """A study of n trials as step2 leaves it: study attrs, trial attrs, archive records and the
    staged survivors. Trials in `fail` end FAIL after two timeouts; trials in `retried` complete on
    the head after an error on rig-a; the others complete on rig-a. Returns the sample per trial."""
    study = Study(name, storage_path(name, root / "optuna_studies"), seed=0, create=True)
    study.set_meta("worker_version", "3.5.0")
    study.set_meta("data", {"survivors": {"path": "data/survivors.npz", "sha256": "0" * 64}})
    (root / "runs" / name / "data").mkdir(parents=True)
    np.savez(root / "runs" / name / "data" / "survivors.npz", seeds=np.arange(POOL, dtype=np.uint64) * 7919)
    archive = Archive(name, root / "runs")
    samples = {}
    for _ in range(n):
        number, params = study.ask()
        identity = {"study": name, "run_id": "r1", "trial_id": contract.trial_id(number),
                    "optuna_trial_number": number, "attempt": 1, "params": params}
        if number in fail:
            failures = [{"attempt": a, "rig": "rig-a", "reason": "timeout", "detail": "over the 600 s limit"}
                        for a in (1, 2)]
            archive.store(contract.make_result(identity, accuracy=None, error="timeout"), final=True)
            study.set_attrs(number, attempts=2, failures=failures)
            study.tell_fail(number, "timeout")
            continue
        samples[number] = np.random.default_rng(number).choice(POOL, SAMPLE, replace=False).tolist()
        failures = ([{"attempt": 1, "rig": "rig-a", "reason": "error", "detail": "ValueError: boom"}]
                    if number in retried else [])
        record = contract.make_result({**identity, "attempt": 1 + len(failures)}, accuracy=value(params),
                                      error=None, sample_indices=samples[number])
        archive.store(record, final=True)
        study.set_attrs(number, rig="head" if failures else "rig-a", attempts=1 + len(failures), failures=failures)
        study.tell_value(number, value(params))
    return samples


def run_report(root: Path, name: str | None, null: str | None = None) -> dict:
    return report(name, null, studies_dir=root / "optuna_studies", runs_dir=root / "runs",
                  console=Console(file=io.StringIO(), width=150))


def summary_of(root: Path, name: str) -> dict:
    return summarize(load_study(name, root / "optuna_studies"), root / "runs")


def test_report_figures_and_files(tmp_path: Path) -> None:
    samples = make_study(tmp_path, "s", 30, fail=(3,), retried=(5, 9))
    summary = run_report(tmp_path, "s")

    values = [planted(t.params) for t in load_study("s", tmp_path / "optuna_studies").trials()
              if t.state == "COMPLETE"]
    assert summary["trials"] == {"total": 30, "complete": 29, "failed": 1, "running": 0, "retried": 3}
    assert summary["best"]["accuracy"] == max(values)
    assert summary["accuracy"]["distinct"] == len(set(values))
    assert summary["accuracy"]["median"] == pytest.approx(float(np.median(values)))
    assert summary["rigs"] == {"head": {"complete": 2, "failed_attempts": 0},
                               "rig-a": {"complete": 27, "failed_attempts": 4}}
    assert summary["failure_reasons"] == {"timeout": 2, "error": 2}

    seen = set().union(*samples.values())
    expected = POOL * (1 - (1 - SAMPLE / POOL) ** 29)
    assert summary["coverage"] == {"pool": POOL, "sample_size": SAMPLE, "trials": 29, "unique_seen": len(seen),
                                   "fraction": len(seen) / POOL, "expected_unique": round(expected, 1)}

    shares = summary["importance"]
    assert max(shares, key=shares.get) == "residue_mod_1" and shares["residue_mod_1"] > 0.5
    assert summary["inert"] == sorted(k for k, v in shares.items() if v < 0.01)

    out = tmp_path / "runs" / "s" / "report"
    stems = ["history", "importance", *(f"slice_{p}" for p in SCORER_SPACE)]
    assert sorted(summary["plots"]) == sorted(str(out / f"{s}.{ext}") for s in stems for ext in ("html", "png"))
    for path in map(Path, summary["plots"]):
        assert path.stat().st_size > 1000
    assert (out / "plotly.min.js").is_file()
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "s: Spearman" in (out / "history.html").read_text()  # titles name the study


def test_report_tables_read_as_counts_with_no_empty_column(tmp_path: Path) -> None:
    make_study(tmp_path, "s", 30)
    console = Console(file=io.StringIO(), width=150)
    report("s", studies_dir=tmp_path / "optuna_studies", runs_dir=tmp_path / "runs", console=console)
    text = console.file.getvalue()
    coverage = text.splitlines()[text.splitlines().index("survivor coverage") + 4]
    assert "e+" not in text and f"{POOL:,}" in coverage  # counts, never 1.122e+04
    importance = text[text.index("parameter importance"):].splitlines()
    assert importance[2].split() == ["┃", "parameter", "┃", "share", "┃"]  # two named columns


def test_null_margin(tmp_path: Path) -> None:
    make_study(tmp_path, "planted", 6)
    make_study(tmp_path, "null", 6, value=lambda p: 0.01 * p["dropout"])
    studies = tmp_path / "optuna_studies"
    planted_summary, null_summary = summary_of(tmp_path, "planted"), summary_of(tmp_path, "null")

    margin = compare_null(planted_summary, load_study("null", studies))
    assert margin == {"study": "null", "best": null_summary["best"]["accuracy"],
                      "margin": pytest.approx(planted_summary["best"]["accuracy"] - null_summary["best"]["accuracy"])}
    assert planted_summary["notes"] == []

    assert compare_null(null_summary, load_study("planted", studies))["margin"] < 0
    assert any("no evidence of signal" in note for note in null_summary["notes"])


@pytest.mark.parametrize(("n", "value", "why"), [
    (1, planted, "at least 2 complete trials (have 1)"),
    (4, lambda p: 0.25, "did not discriminate"),
])
def test_importance_needs_spread(tmp_path: Path, n: int, value: Callable, why: str) -> None:
    make_study(tmp_path, "s", n, value=value)
    summary = summary_of(tmp_path, "s")
    assert summary["importance"] is None and summary["inert"] == []
    assert any(why in note for note in summary["notes"])


def test_cli_report_of_a_failed_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report"]) == 2
    assert "no study journals" in capsys.readouterr().err
    make_study(tmp_path, "old", 1, fail=(0,))
    make_study(tmp_path, "new", 2, fail=(0, 1))
    os.utime(storage_path("old", tmp_path / "optuna_studies"), (1, 1))
    assert cli.main(["report"]) == 0  # the newest study
    out = capsys.readouterr().out
    assert "study new" in out and "timeout" in out and "no trial completed" in out
    summary = json.loads((tmp_path / "runs" / "new" / "report" / "summary.json").read_text())
    assert summary["best"] is None and summary["plots"] == []
    assert summary["coverage"]["trials"] == 0 and summary["rigs"] == {"rig-a": {"complete": 0, "failed_attempts": 4}}
    assert cli.main(["report", "nope"]) == 2
    assert "no such study" in capsys.readouterr().err
