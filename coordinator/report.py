"""`coordinator report`: what a study found, and whether to believe it.

From the study's journal and its archive: the verdict of each figure (the best against what chance
gives for the best of N trials, coordinator/chance.py), the confirmed optimum beside the search's
best, the top of the optimum's ranking and, on synthetic data, where the generating seeds were ranked;
the best trial, the spread of values (one distinct value means the objective did not discriminate),
trials per rig and failures per reason, survivor coverage against N(1 - (1 - n/N)^k), which
parameters mattered (not meaningful without evidence of signal), and, given a null-data study of the
same pool, sample size, draws and design, how the two distributions of values compare. Prints it,
writes the figures to runs/<study>/report/summary.json and the plots beside them (HTML and PNG).
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

from coordinator import confirm, results
from coordinator.chance import verdict
from coordinator.results import Archive
from coordinator.study import STUDIES_DIR, Study, TrialRecord, TrialState, storage_path
from worker import contract
from worker.files import write_json_atomic
from worker.objective import OBJECTIVES, SPEARMAN
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


def staged(run_dir: Path, meta: dict[str, Any], role: str) -> Path | None:
    """The copy of a data file staged beside the study's archive, if it is there."""
    ref = meta.get("data", {}).get(role)
    path = run_dir / "data" / Path(ref["path"]).name if ref else None
    return path if path is not None and path.is_file() else None


def pool_seeds(run_dir: Path, meta: dict[str, Any]) -> np.ndarray | None:
    """The seeds of the pool the trials sampled from, in the workers' order (repeats dropped)."""
    from worker.survivors import read_survivors

    path = staged(run_dir, meta, "survivors")
    return None if path is None else read_survivors(path).seeds


def draw_counts(run_dir: Path, meta: dict[str, Any]) -> tuple[int, int] | None:
    """(train draws, holdout draws) of the staged histories."""
    paths = [staged(run_dir, meta, role) for role in ("train_history", "holdout_history")]
    return None if None in paths else tuple(len(json.loads(p.read_text())) for p in paths)  # type: ignore[return-value]


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
    run_dir = runs_dir / study.name
    seeds = pool_seeds(run_dir, meta)
    rigs, reasons = tally(trials)
    objective = meta.get("evaluation", {}).get("objective", SPEARMAN.name)
    verdicts = {name: verdict(trials, name).to_dict() for name in OBJECTIVES}
    shares, why_not = importance(study, values)
    notes = [why_not] if why_not else []
    meaningful = verdicts[objective]["p_value"] is None or verdicts[objective]["signal"]
    if shares and not meaningful:
        notes.append(f"parameter importance is not meaningful: {verdicts[objective]['words']}")
    if seeds is None:
        notes.append(f"no staged survivors file under {run_dir / 'data'}: coverage not computed")
    return {
        "study": study.name,
        "storage": str(study.path),
        "worker_version": meta.get("worker_version"),
        "code_hash": meta.get("code_hash"),
        "objective": objective,
        "evaluation": meta.get("evaluation"),
        "verdicts": verdicts,
        "confirmation": _confirmation(study, meta, Archive(study.name, runs_dir)),
        "generators": None if seeds is None else generator_ranks(study, meta, Archive(study.name, runs_dir), seeds),
        "trials": {"total": len(trials), **results.trial_counts(trials)},
        "best": None if best is None else {"trial": best.number, "trial_id": contract.trial_id(best.number),
                                           "accuracy": best.value, "rig": best.attrs.get("rig"),
                                           "params": best.params},
        "accuracy": distribution(values),
        "rigs": rigs,
        "failure_reasons": reasons,
        "coverage": None if seeds is None else results.coverage(Archive(study.name, runs_dir).finals(), len(seeds)),
        "importance": shares,
        "importance_meaningful": meaningful,
        "inert": sorted(name for name, share in (shares or {}).items() if share < INERT_SHARE),
        "notes": notes,
    }


def _confirmation(study: Study, meta: dict[str, Any], archive: Archive) -> dict[str, Any] | None:
    """The search's best trials evaluated again on fresh samples, the optimum among them, and the top of
    the optimum's ranking (its first replicate's)."""
    top = meta.get("confirm", {}).get("top", 0)
    if not top:
        return None
    state = confirm.records(study)
    candidates = [{"trial": t.number, "search_value": t.value, **state.get(str(t.number), {}).get("confirmed", {}),
                   "failed": state.get(str(t.number), {}).get("failed")} for t in confirm.candidates(study, top)]
    found = confirm.optimum(study, top)
    record = None if found is None else archive.finals("confirm").get(contract.confirm_id(found.trial.number))
    return {"top": top, "candidates": candidates, "optimum": None if found is None else found.to_dict(),
            "top_survivors": None if record is None else record["diagnostics"]["top"][0]}


def generator_ranks(study: Study, meta: dict[str, Any], archive: Archive, seeds: np.ndarray) -> list[dict] | None:
    """On synthetic data whose truth is known (demo_truth.json): where each generating seed was ranked in
    every replicate whose survivors held it, trials and confirmations, as a share of the replicate's
    survivors (0: first). None when the data's truth is not known."""
    path = Path(meta.get("extras", {}).get("demo_truth.json", "/nonexistent"))
    if not path.is_file():
        return None
    truth = json.loads(path.read_text())
    records = [*archive.finals().values(), *archive.finals("confirm").values()]
    out = []
    for gen in truth["generators"]:
        at = set(np.flatnonzero(seeds == np.uint64(gen["seed"])).tolist())
        shares = [ranked.index(i) / len(ranked) for r in records if r.get("status") == "success"
                  for ranked in r["diagnostics"].get("ranked", []) for i in at.intersection(ranked)]
        out.append({"seed": gen["seed"], "draws": [gen["start"], gen["end"]], "in_pool": bool(at),
                    "made_the_holdout": gen["seed"] == truth.get("holdout_generator"), "replicates": len(shares),
                    "median_share": float(np.median(shares)) if shares else None,
                    "in_top_1pct": sum(share < 0.01 for share in shares)})
    return out


def compare_null(study: Study, null: Study, runs_dir: Path = results.RUNS_DIR) -> dict[str, Any]:
    """The study's whole distribution of values against a null study's (Mann-Whitney U, one-sided), the
    same comparison run after run: not best against best. The null study must share the pool, the
    sample size, the draws and the evaluation design; another is refused, naming each difference."""
    from scipy.stats import mannwhitneyu

    here, there = runs_dir / study.name, runs_dir / null.name
    mine, theirs = study.meta(), null.meta()
    differences = []
    for what, a, b in (("pool", _pool_key(here, mine), _pool_key(there, theirs)),
                       ("sample size", mine.get("sample_size"), theirs.get("sample_size")),
                       ("draws (train, holdout)", draw_counts(here, mine), draw_counts(there, theirs)),
                       ("evaluation", mine.get("evaluation"), theirs.get("evaluation"))):
        if a != b or a is None:
            differences.append(f"{what}: {a} here, {b} in {null.name}")
    if differences:
        raise ReportError(f"--null {null.name}: {'; '.join(differences)}: a null comparison needs the same pool,"
                          " sample size, draws and evaluation")
    values = [t.value for t in study.trials() if t.state == TrialState.COMPLETE]
    null_values = [t.value for t in null.trials() if t.state == TrialState.COMPLETE]
    if not values or not null_values:
        raise ReportError(f"--null {null.name}: a null comparison needs complete trials in both studies")
    p = float(mannwhitneyu(values, null_values, alternative="greater").pvalue)
    words = (f"the values stand above the null study's (Mann-Whitney p = {p:.2g})" if p < 0.01 else
             f"no evidence of signal beyond the null study: its values are as high (Mann-Whitney p = {p:.2g})")
    return {"study": null.name, "distribution": distribution(null_values), "mannwhitney_p": p,
            "median_difference": float(np.median(values) - np.median(null_values)), "words": words}


def _pool_key(run_dir: Path, meta: dict[str, Any]) -> tuple[int, str] | None:
    """What identifies a pool across studies: its size and its seeds' hash (files may differ in bytes)."""
    import hashlib

    seeds = pool_seeds(run_dir, meta)
    return None if seeds is None else (len(seeds), hashlib.sha256(seeds.tobytes()).hexdigest()[:16])


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
        summary["null"] = compare_null(study, load_study(null, studies_dir), runs_dir)
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
    for name, v in s["verdicts"].items():
        style = "green" if v["signal"] else "yellow"
        marker = " (the study's objective)" if name == s["objective"] else ""
        console.print(f"[bold]verdict, {name}{marker}:[/] [{style}]{v['words']}[/]")
    _show_confirmation(s, console)
    if s["best"]:
        best = s["best"]
        _section(console, f"the search's best: {best['trial_id']}, {s['objective']} {best['accuracy']:.6f},"
                          f" on {best['rig']}", ("parameter", "value"), list(best["params"].items()))
    if s["generators"]:
        _section(console, "the generating seeds (synthetic data): their rank as a share of each replicate's"
                          " survivors (0: first)", ("seed", "draws", "in the pool", "made the holdout", "replicates",
                                                      "median share", "in the top 1%"),
                 [(g["seed"], f"{g['draws'][0]}-{g['draws'][1]}", g["in_pool"], g["made_the_holdout"],
                   g["replicates"], "-" if g["median_share"] is None else f"{g['median_share']:.3f}",
                   g["in_top_1pct"]) for g in s["generators"]])
    if s["accuracy"]:
        _section(console, f"accuracy ({s['objective']}) of the complete trials", tuple(s["accuracy"]),
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
        title = "parameter importance (share of the total, PED-ANOVA)" + (
            "" if s["importance_meaningful"] else ": NOT MEANINGFUL, no evidence of signal")
        _section(console, title, ("parameter", "share"),
                 [(k, f"{v:.1%}" + (" inert" if k in s["inert"] else "")) for k, v in s["importance"].items()])
        for name in s["inert"] if s["importance_meaningful"] else []:
            console.print(f"[yellow]warning:[/] {name} has {s['importance'][name]:.2%} of the importance: it looks"
                          " inert (changing it changes nothing measurable)")
    if "null" in s:
        console.print(f"\nnull study {s['null']['study']}: {s['null']['words']}; median difference"
                      f" {s['null']['median_difference']:+.4f}")
    for note in s["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def _show_confirmation(s: dict[str, Any], console: Console) -> None:
    c = s["confirmation"]
    if c is None:
        return
    rows = [(f"trial_{x['trial']:04d}", x["search_value"], "-" if "value" not in x else x["value"],
             "-" if not x.get("interval") else f"{x['interval'][0]:.4f} to {x['interval'][1]:.4f}",
             x["failed"] or "") for x in c["candidates"]]
    _section(console, f"the search's best {c['top']} trials again on fresh samples", ("trial", "search value",
                                                                                       "confirmed", "95% interval",
                                                                                       "failed"), rows)
    if c["optimum"]:
        o = c["optimum"]
        console.print(f"[bold]optimum:[/] trial_{o['trial_number']:04d}, confirmed {o['value']:.4f}; the search's"
                      f" best, trial_{o['search_best']['trial_number']:04d}, had {o['search_best']['value']:.4f}")
    if c.get("top_survivors"):
        _section(console, "the optimum's top-ranked survivors (a confirmation replicate)", ("seed", "predicted",
                                                                                          "holdout quality"),
                 [(t["seed"], t["predicted"], t["holdout"]) for t in c["top_survivors"]])
