"""`coordinator report`: what a study found, and whether to believe it.

From the study's journal and its archive: the best trial, the spread of accuracies (one distinct
value means the objective did not discriminate), trials per rig and failures per reason, survivor
coverage against N(1 - (1 - n/N)^k), which parameters mattered (an inert one showed no measurable
effect), and, given a null-data study, the margin over its best. Prints it, writes the
figures to runs/<study>/report/summary.json and the plots beside them (HTML and PNG).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from coordinator import results
from coordinator.results import Archive
from coordinator.study import STUDIES_DIR, Study, TrialRecord, TrialState, storage_path
from worker import contract
from worker.files import write_json_atomic
from worker.params import SCORER_SPACE

INERT_SHARE = 0.01  # below this share of the total importance a parameter changes nothing measurable
TARGET = "Spearman ρ (holdout)"
SLICE_COLOURS = "viridis"  # trial number as colour: dark to bright, every point visible on the plot's grey


class ReportError(RuntimeError):
    pass


def newest_study(studies_dir: Path = STUDIES_DIR) -> str:
    journals = sorted(studies_dir.glob("*.journal"), key=lambda p: p.stat().st_mtime)
    if not journals:
        raise ReportError(f"{studies_dir}: no study journals")
    return journals[-1].stem


def load_study(name: str, studies_dir: Path = STUDIES_DIR) -> Study:
    path = storage_path(name, studies_dir)
    if not path.is_file():
        raise ReportError(f"{path}: no such study (known: {', '.join(p.stem for p in studies_dir.glob('*.journal'))})")
    return Study(name, path, seed=0, create=False, writer=False)


def pool_size(run_dir: Path, meta: dict[str, Any]) -> int | None:
    """Survivors in the pool the trials sampled from: the copy staged beside the run's archive."""
    ref = meta.get("data", {}).get("survivors")
    path = run_dir / "data" / Path(ref["path"]).name if ref else None
    if path is None or not path.is_file():
        return None
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return len(npz["seeds"])
    return len(json.loads(path.read_text()))


def tally(trials: list[TrialRecord]) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per rig: trials it completed and attempts that failed on it; per reason: failed attempts."""
    rigs: dict[str, Counter[str]] = {}
    reasons: Counter[str] = Counter()
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            rigs.setdefault(trial.attrs.get("rig", "?"), Counter())["complete"] += 1
        for failure in trial.attrs.get("failures", []):
            rigs.setdefault(failure["rig"], Counter())["failed_attempts"] += 1
            reasons[failure["reason"]] += 1
    return ({rig: {"complete": c["complete"], "failed_attempts": c["failed_attempts"]}
             for rig, c in sorted(rigs.items())}, dict(reasons.most_common()))


def distribution(values: list[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"count": len(values), "min": float(q[0]), "q1": float(q[1]), "median": float(q[2]),
            "q3": float(q[3]), "max": float(q[4]), "distinct": len(set(values))}


def importance(study: Study, values: list[float]) -> tuple[dict[str, float] | None, str | None]:
    """Each parameter's share of the importance (PED-ANOVA: how much the top trials' values of it
    differ from the rest), or None and why not."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    if len(values) < 2:
        return None, f"importance needs at least 2 complete trials (have {len(values)})"
    if len(set(values)) == 1:
        return None, f"all {len(values)} complete trials have accuracy {values[0]}: the objective did not" \
                     " discriminate, so no parameter can be told apart"
    shares = get_param_importances(study.study, evaluator=PedAnovaImportanceEvaluator())
    return {name: float(share) for name, share in shares.items()}, None


def summarize(study: Study, runs_dir: Path = results.RUNS_DIR) -> dict[str, Any]:
    """Every figure the report shows, as plain data (what summary.json holds)."""
    trials = study.trials()
    meta = study.meta()
    best = study.best()
    values = [t.value for t in trials if t.state == TrialState.COMPLETE]
    pool = pool_size(runs_dir / study.name, meta)
    rigs, reasons = tally(trials)
    shares, why_not = importance(study, values)
    notes = [why_not] if why_not else []
    if pool is None:
        notes.append(f"no staged survivors file under {runs_dir / study.name / 'data'}: coverage not computed")
    return {
        "study": study.name,
        "storage": str(study.path),
        "worker_version": meta.get("worker_version"),
        "code_hash": meta.get("code_hash"),
        "trials": {"total": len(trials), **results.trial_counts(trials)},
        "best": None if best is None else {"trial": best.number, "trial_id": contract.trial_id(best.number),
                                           "accuracy": best.value, "rig": best.attrs.get("rig"),
                                           "params": best.params},
        "accuracy": distribution(values),
        "rigs": rigs,
        "failure_reasons": reasons,
        "coverage": None if pool is None else results.coverage(Archive(study.name, runs_dir).finals(), pool),
        "importance": shares,
        "inert": sorted(name for name, share in (shares or {}).items() if share < INERT_SHARE),
        "notes": notes,
    }


def compare_null(summary: dict[str, Any], null: Study) -> dict[str, Any]:
    """The margin of the study's best over a null-data study's best: a 'best of k' that does not
    beat the best of k on data with no signal found nothing."""
    null_best = null.best()
    out: dict[str, Any] = {"study": null.name, "best": null_best.value if null_best else None, "margin": None}
    if summary["best"] is None or null_best is None:
        summary["notes"].append("null comparison needs a complete trial in both studies")
    else:
        out["margin"] = summary["best"]["accuracy"] - null_best.value
        if out["margin"] <= 0:
            summary["notes"].append(f"the best ({summary['best']['accuracy']:.6f}) does not beat the null study's"
                                    f" best ({null_best.value:.6f}): no evidence of signal")
    return out


def _titles(study: Study, with_importance: bool) -> list[tuple[str, str, dict[str, Any], str]]:
    """(file stem, Optuna plot, its arguments, the title that names the study) for every chart."""
    from optuna.importance import PedAnovaImportanceEvaluator

    n = sum(t.state == TrialState.COMPLETE for t in study.trials())
    charts = [("history", "plot_optimization_history", {}, f"{study.name}: {TARGET} of {n} complete trials")]
    if with_importance:
        charts.append(("importance", "plot_param_importances", {"evaluator": PedAnovaImportanceEvaluator()},
                       f"{study.name}: parameter importance (PED-ANOVA)"))
    charts += [(f"slice_{name}", "plot_slice", {"params": [name]}, f"{study.name}: {TARGET} against {name}")
               for name in SCORER_SPACE]
    return charts


def _present_html(figure: Any, stem: str, title: str) -> None:
    """The study's title; the legend under the plot, not beside it; trial colours that stay visible."""
    figure.update_layout(title=title, legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0})
    if stem.startswith("slice_"):
        figure.update_traces(marker={"colorscale": SLICE_COLOURS.capitalize()}, selector={"mode": "markers"})


def _present_png(axes: Any, stem: str, title: str) -> None:
    axes.set_title(title)
    if axes.get_legend() is not None:  # Optuna puts it right of the axes, which then shrink to half the width
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    if stem.startswith("slice_"):  # the default colours start at white: the first trials vanish
        for points in axes.collections:
            points.set_cmap(SLICE_COLOURS)


def write_plots(study: Study, out_dir: Path, with_importance: bool) -> list[Path]:
    """Optimisation history, parameter importances and a slice per scorer parameter, each as
    interactive HTML (plotly.js written once beside them, so they open offline) and as PNG, titled
    with the study's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as html
    import optuna.visualization.matplotlib as png
    from optuna.exceptions import ExperimentalWarning

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, plot, kwargs, title in _titles(study, with_importance):
        figure = getattr(html, plot)(study.study, target_name=TARGET, **kwargs)
        _present_html(figure, stem, title)
        figure.write_html(out_dir / f"{stem}.html", include_plotlyjs="directory")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            axes = getattr(png, plot)(study.study, target_name=TARGET, **kwargs)
        _present_png(axes, stem, title)
        axes.figure.savefig(out_dir / f"{stem}.png", dpi=110, bbox_inches="tight")  # long names, outside legends
        plt.close(axes.figure)
        written += [out_dir / f"{stem}.html", out_dir / f"{stem}.png"]
    return written


def report(name: str | None = None, null: str | None = None, *, studies_dir: Path = STUDIES_DIR,
           runs_dir: Path = results.RUNS_DIR, console: Console | None = None) -> dict[str, Any]:
    """Summarise a study (default: the newest), write summary.json and the plots, print it all."""
    study = load_study(name or newest_study(studies_dir), studies_dir)
    summary = summarize(study, runs_dir)
    if null is not None:
        summary["null"] = compare_null(summary, load_study(null, studies_dir))
    out_dir = runs_dir / study.name / "report"
    if summary["accuracy"] is None:
        summary["notes"].append("no trial completed: nothing to rank, no plots written")
        plots = []
    else:
        plots = write_plots(study, out_dir, with_importance=summary["importance"] is not None)
    summary["plots"] = [str(p) for p in plots]
    write_json_atomic(out_dir / "summary.json", summary)
    console = console or Console()
    show(summary, console)
    console.print(f"written: {out_dir / 'summary.json'} and {len(plots)} plot files in {out_dir}")
    return summary


def _section(console: Console, title: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(f"\n[bold]{title}[/]")
    console.print(table)


def show(summary: dict[str, Any], console: Console) -> None:
    s, counts = summary, summary["trials"]
    console.print(f"[bold]study {s['study']}[/] (worker {s['worker_version']}, {s['storage']}): {counts['total']}"
                  f" trials, {counts['complete']} complete, {counts['failed']} failed, {counts['running']} running,"
                  f" {counts['retried']} retried")
    if s["best"]:
        best = s["best"]
        _section(console, f"best: {best['trial_id']}, accuracy {best['accuracy']:.6f}, on {best['rig']}",
                 ("parameter", "value"), list(best["params"].items()))
    if s["accuracy"]:
        _section(console, "accuracy (Spearman ρ) of the complete trials", tuple(s["accuracy"]),
                 [tuple(s["accuracy"].values())])
    if s["rigs"]:
        _section(console, "rigs", ("rig", "complete", "failed attempts"),
                 [(rig, c["complete"], c["failed_attempts"]) for rig, c in s["rigs"].items()])
    if s["failure_reasons"]:
        _section(console, "failed attempts by reason", ("reason", "attempts"), list(s["failure_reasons"].items()))
    if s["coverage"]:
        cov = s["coverage"]
        _section(console, "survivor coverage",
                 ("pool N", "sample n", "trials k", "unique seen", "expected N(1-(1-n/N)^k)"),
                 [(f"{cov['pool']:,}", f"{cov['sample_size']:,}", cov["trials"],
                   f"{cov['unique_seen']:,} ({cov['fraction']:.1%})", f"{cov['expected_unique']:,.0f}")])
    if s["importance"]:
        _section(console, "parameter importance (share of the total, PED-ANOVA)", ("parameter", "share"),
                 [(k, f"{v:.1%}" + (" inert" if k in s["inert"] else "")) for k, v in s["importance"].items()])
        for name in s["inert"]:
            console.print(f"[yellow]warning:[/] {name} has {s['importance'][name]:.2%} of the importance: it looks"
                          " inert (changing it changes nothing measurable)")
    if "null" in s and s["null"]["margin"] is not None:
        console.print(f"\nnull study {s['null']['study']}: best {s['null']['best']:.6f};"
                      f" margin of this study's best over it: {s['null']['margin']:+.6f}")
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}")
