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
from coordinator.report import ReportError, compare_null, load_study, report, summarize
from coordinator.results import Archive
from coordinator.study import Study, storage_path
from worker import contract
from worker.params import SCORER_SPACE

POOL, SAMPLE = 2_000, 150


def planted(params: dict) -> float:
    """An objective only residue_mod_1 moves: every other parameter is inert."""
    return (params["residue_mod_1"] - 5) / 20


EVALUATION = {"replicates": 1, "eval_size": SAMPLE, "nulls": 200, "objective": "spearman_rho"}
NULL_SD = 0.05  # each trial's chance level: its value's permutation null has mean 0 and this s.d.


def make_study(root: Path, name: str, n: int, value: Callable[[dict], float] = planted,
               fail: tuple[int, ...] = (), retried: tuple[int, ...] = (), sample_size: int = SAMPLE,
               pool: int = POOL, truth: dict | None = None) -> dict[int, list[int]]:
    """A study of n trials as step2 leaves it: study attrs, trial attrs with figures, archive records and
    the staged survivors and histories. Trials in `fail` end FAIL after two timeouts; trials in `retried`
    complete on the head after an error on rig-a; the others complete on rig-a. Each record ranks its
    sample by seed index (the lowest first). `truth` is written as demo_truth.json beside the data.
    Returns the sample per trial."""
    study = Study(name, storage_path(name, root / "optuna_studies"), seed=0, create=True)
    data = root / "runs" / name / "data"
    data.mkdir(parents=True)
    np.savez(data / "survivors.npz", seeds=np.arange(pool, dtype=np.uint64) * 7919)
    for role, draws in (("train_history", 800), ("holdout_history", 200)):
        (data / f"{role}.json").write_text(json.dumps(list(range(draws))))
    study.set_meta("worker_version", "3.5.0")
    study.set_meta("data", {role: {"path": f"data/{role}.{ext}", "sha256": "0" * 64} for role, ext in
                            (("survivors", "npz"), ("train_history", "json"), ("holdout_history", "json"))})
    study.set_meta("sample_size", sample_size)
    study.set_meta("evaluation", EVALUATION)
    if truth is not None:
        (root / f"{name}_truth.json").write_text(json.dumps(truth))
        study.set_meta("extras", {"demo_truth.json": str(root / f"{name}_truth.json")})
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
        samples[number] = np.random.default_rng(number).choice(pool, sample_size, replace=False).tolist()
        failures = ([{"attempt": 1, "rig": "rig-a", "reason": "error", "detail": "ValueError: boom"}]
                    if number in retried else [])
        record = contract.make_result({**identity, "attempt": 1 + len(failures)}, accuracy=value(params),
                                      error=None, sample_indices=samples[number],
                                      diagnostics={"ranked": [sorted(samples[number])]})
        archive.store(record, final=True)
        figure = {"value": value(params), "null_mean": 0.0, "null_sd": NULL_SD}
        study.set_attrs(number, rig="head" if failures else "rig-a", attempts=1 + len(failures), failures=failures,
                        figures={"spearman_rho": figure})
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


def test_verdict_says_whether_the_best_beats_chance(tmp_path: Path) -> None:
    make_study(tmp_path, "planted", 12)
    make_study(tmp_path, "null", 12, value=lambda p: 0.01 * p["dropout"])  # far inside its chance level
    planted_summary, null_summary = summary_of(tmp_path, "planted"), summary_of(tmp_path, "null")

    rho = planted_summary["verdicts"]["spearman_rho"]
    assert rho["signal"] and rho["trials"] == 12 and rho["best"] == planted_summary["best"]["accuracy"]
    assert planted_summary["importance_meaningful"] and planted_summary["notes"] == []
    assert planted_summary["verdicts"]["top_lift"]["p_value"] is None  # no trial reported a chance level for it

    rho = null_summary["verdicts"]["spearman_rho"]
    assert not rho["signal"] and rho["p_value"] > 0.5 and "no evidence of signal" in rho["words"]
    assert null_summary["importance"] is not None and not null_summary["importance_meaningful"]
    assert any("parameter importance is not meaningful" in note for note in null_summary["notes"])

    console = Console(file=io.StringIO(), width=150)
    report("null", studies_dir=tmp_path / "optuna_studies", runs_dir=tmp_path / "runs", console=console)
    text = console.file.getvalue()
    assert "NOT MEANINGFUL" in text and "looks inert" not in text  # no parameter named inert without signal


def test_null_study_compares_distributions(tmp_path: Path) -> None:
    make_study(tmp_path, "planted", 12)
    make_study(tmp_path, "null", 12, value=lambda p: 0.01 * p["dropout"])
    studies, runs = tmp_path / "optuna_studies", tmp_path / "runs"

    above = compare_null(load_study("planted", studies), load_study("null", studies), runs)
    assert above["study"] == "null" and above["mannwhitney_p"] < 0.01 and "stand above" in above["words"]
    null_values = [0.01 * t.params["dropout"] for t in load_study("null", studies).trials()]
    assert above["distribution"]["median"] == pytest.approx(float(np.median(null_values)))
    below = compare_null(load_study("null", studies), load_study("planted", studies), runs)
    assert below["mannwhitney_p"] > 0.5 and "no evidence of signal" in below["words"]
    assert below["median_difference"] == pytest.approx(-above["median_difference"])

    summary = run_report(tmp_path, "planted", null="null")
    assert summary["null"] == above
    assert json.loads((runs / "planted" / "report" / "summary.json").read_text())["null"] == above


@pytest.mark.parametrize(("kwargs", "why"), [
    ({"sample_size": SAMPLE + 1}, f"sample size: {SAMPLE} here, {SAMPLE + 1} in other"),
    ({"pool": POOL + 1}, "pool: (2000, "),
])
def test_null_study_of_another_design_is_refused(tmp_path: Path, kwargs: dict, why: str) -> None:
    make_study(tmp_path, "s", 3)
    make_study(tmp_path, "other", 3, **kwargs)
    with pytest.raises(ReportError, match="--null other: ") as error:
        run_report(tmp_path, "s", null="other")
    assert why in str(error.value)
    assert not (tmp_path / "runs" / "s" / "report").exists()  # refused before anything is written


def test_generating_seeds_are_found_in_the_rankings(tmp_path: Path) -> None:
    truth = {"generators": [{"seed": 7919 * 3, "start": 0, "end": 500},  # index 3: first whenever sampled
                            {"seed": 7919 * (POOL - 1), "start": 500, "end": 1000},  # last whenever sampled
                            {"seed": 12345, "start": 1000, "end": 1500}],  # not in the pool
             "holdout_generator": 12345}
    samples = make_study(tmp_path, "s", 40, truth=truth)
    first, last, absent = summary_of(tmp_path, "s")["generators"]

    holding = [s for s in samples.values() if 3 in s]
    assert first["in_pool"] and first["replicates"] == len(holding) > 0
    assert first["median_share"] == 0.0 and first["in_top_1pct"] == len(holding)
    assert last["median_share"] == pytest.approx((SAMPLE - 1) / SAMPLE) and last["in_top_1pct"] == 0
    assert absent == {"seed": 12345, "draws": [1000, 1500], "in_pool": False, "made_the_holdout": True,
                      "replicates": 0, "median_share": None, "in_top_1pct": 0}
    assert summary_of(tmp_path, "s")["confirmation"] is None  # this study asked for none


def test_confirmation_names_the_optimum_beside_the_search_best(tmp_path: Path) -> None:
    make_study(tmp_path, "s", 10)
    study = Study("s", storage_path("s", tmp_path / "optuna_studies"), seed=0, create=False)
    ranked = sorted((t for t in study.trials()), key=lambda t: (-t.value, t.number))
    first, second = ranked[0].number, ranked[1].number
    study.set_meta("confirm", {"top": 3, "replicates": 8})
    study.set_meta("confirmations", {
        str(first): {"confirmed": {"value": 0.10, "se": 0.02, "replicates": 8, "interval": [0.05, 0.15]}},
        str(second): {"confirmed": {"value": 0.20, "se": 0.02, "replicates": 8, "interval": [0.15, 0.25]}},
        str(ranked[2].number): {"failed": "timeout (after 2 attempts)"}})
    top = [{"seed": 7, "predicted": 0.9, "holdout": 0.8}]
    identity = {"study": "s", "run_id": "r1", "trial_id": contract.confirm_id(second),
                "optuna_trial_number": second, "attempt": 1, "params": ranked[1].params}
    Archive("s", tmp_path / "runs").store(contract.make_result(identity, accuracy=0.2, error=None,
                                                               diagnostics={"top": [top]}), final=True)

    confirmation = summary_of(tmp_path, "s")["confirmation"]
    assert [c["trial"] for c in confirmation["candidates"]] == [r.number for r in ranked[:3]]
    assert [c.get("value") for c in confirmation["candidates"]] == [0.10, 0.20, None]
    assert confirmation["candidates"][2]["failed"] == "timeout (after 2 attempts)"
    assert confirmation["optimum"] == {"trial_number": second, "value": 0.20, "se": 0.02,
                                       "interval_95": [0.15, 0.25], "replicates": 8,
                                       "search_value": ranked[1].value,
                                       "search_best": {"trial_number": first, "value": ranked[0].value}}
    assert confirmation["top_survivors"] == top


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
