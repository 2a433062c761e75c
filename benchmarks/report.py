"""Figures as numbers (benchmarks/results.json) and as a page (docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results.json"
PAGE = REPO / "docs" / "BENCHMARKS.md"


def figure(values: Iterable[float | None], unit: str, **extra: Any) -> dict[str, Any]:
    """Median, min and max of repeated measurements. None (never reached) sorts above every number and
    is written as null."""
    raw = [math.inf if v is None else float(v) for v in values]

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {"median": finite(statistics.median(raw)), "min": finite(min(raw)), "max": finite(max(raw)),
            "n": len(raw), "unit": unit, "values": [finite(v) for v in raw], **extra}


@dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[float], bool] | None  # None: a figure to report, with no target
    replaced: str  # the replaced system's figure and its source


TARGETS: dict[str, Target] = {
    "trial_seconds": Target("<= 0.5 s", lambda v: v <= 0.5, "18.3 s: one old-worker trial (v3.4, CPU, pool 5,000, "
                            "sample 450, 4,000/1,000 draws) on a 2-core machine like this one (design notes §6)"),
    "scoring_ratio": Target("report", None, "a per-seed Python loop computing the same features (in this run)"),
    "dispatch_overhead_ms": Target("<= 20 ms", lambda v: v <= 20, "a fresh `ssh host true` alone is ~540 ms; "
                                   "fresh python + torch import ~3.1 s warm (design notes §6)"),
    "dispatch_ratio": Target(">= 10", lambda v: v >= 10, "the old design, measured in the same run "
                             "(`dispatch_ratio.old_design_s` below); the old coordinator took 28 s for 26 jobs of "
                             "0 s, 1.08 s per job (design notes §6)"),
    "makespan_efficiency": Target(">= 0.95", lambda v: v >= 0.95, "0.05: old coordinator, 100 jobs of 2 s on 26 "
                                  "loopback slots, 152 s for an ideal 8 s; on the cluster 3 min 56 s for 100 trials "
                                  "of ~2.8 s on 26 GPUs, ideal ≈ 11 s (design notes §2, §6)"),
    "makespan_efficiency_250ms": Target(">= 0.8", lambda v: v >= 0.8, "not measured: the old coordinator's fixed "
                                        "sleeps alone were 2-3 s per job (design notes §2)"),
    "makespan_efficiency_study": Target(">= 0.9", lambda v: v >= 0.9, "as above (the old coordinator's measured "
                                        "jobs had no optimiser in the loop)"),
    "rig_warmup_s": Target("report", None, "a fresh python importing torch per job: 3.1 s warm, 6.5 s cold "
                           "(design notes §6)"),
    "rig_warmup_ratio": Target("<= 1.5", lambda v: v <= 1.5, "one python per slot, each importing torch: 26 slots "
                               "took 71-88 s on this machine (issue 14)"),
    "slot_pss_mb": Target("<= 150", lambda v: v <= 150, "one python per slot: 364 MB RSS, 322 MB PSS (server 190 + "
                          "spare 131) each, measured here before the process tree"),
    "trial_process_ms": Target("report", None, "not measured: the old design started a fresh python per job"),
    "tpe_trials_to_random_best": Target("<= 40", lambda v: v <= 40, "the baseline itself: the old design asked "
                                        "all 100 trials before telling any, so its TPE was random search (design "
                                        "notes §2)"),
    "ask_tell_ms_1000": Target("report", None, "not measured"),
    "trial_seconds_design": Target("report", None, "`trial_seconds` above: one sample of 450 judged on itself"),
    "objective_noise_ratio": Target("<= 0.33", lambda v: v <= 0.33, "about 0.9: one sample of 450 judged on itself "
                                    "(`objective_noise_ratio.old_design` below, on the same demo)"),
    "null_false_signal": Target("<= 0.05", lambda v: v <= 0.05, "no chance level: a null study's best was reported "
                                "as a result"),
    "confirmed_vs_search_best": Target("report", None, "not measured: the search's best was the result"),
    "tpe_vs_random_confirmed": Target("report", None, "random search (the old design asked every trial first)"),
    "loader_survivors_per_s": Target("report", None, "refused Step 1's folder (design notes §2)"),
    "ask_capacity_per_s": Target(">= 100", lambda v: v >= 100, "about 25-30 trials/s at 1,000 trials: one TPE ask "
                                 "at a time in the head, 31-41 ms each (issue 14)"),
    "study_cost_ratio": Target(">= 0.95", lambda v: v >= 0.95, "0.49 at trial_s 0.25 (issue 14); the old "
                               "coordinator's measured jobs had no optimiser in the loop"),
}


def reference_ms(repeats: int = 5) -> float:
    """The median milliseconds of a fixed piece of work like the head's (Python objects, JSON, small numpy
    calls), timed just before a group runs: the machine's speed for one core's Python then. Machines of
    one name, or one machine an hour apart, have differed twofold in it. Figures bound by the kernel
    (fork, exit, page faults: the 250 ms makespan) have moved without it."""

    def work() -> float:
        start = time.perf_counter()
        rows = [{"trial": i, "value": (i * 0.618034) % 1.0, "params": {"a": i % 7, "b": str(i)}} for i in range(3000)]
        json.loads(json.dumps(rows))
        x = np.arange(64, dtype=float)
        for _ in range(1500):
            x = np.sort(np.exp(-x / 64.0) * 64.0)
        return (time.perf_counter() - start) * 1000

    return round(statistics.median(work() for _ in range(repeats)), 2)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "os": platform.platform(),
            "python": platform.python_version(), **{name: version(name) for name in
                                                    ("torch", "numpy", "scipy", "optuna", "paramiko")},
            "openssh": ssh}


def commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def save(measured: dict[str, dict[str, dict[str, Any]]], seconds: dict[str, float], docs: dict[str, str],
         load_before: float, reference: dict[str, float]) -> None:
    """Merge the figures just measured (group -> key -> figure) into results.json, where figures not
    re-measured keep their earlier values and dates, and rewrite docs/BENCHMARKS.md from it.
    `load_before`: the 1-minute load average before the run, i.e. other work on the machine;
    `reference`: per group, `reference_ms` just before it ran."""
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    merged = {**old.get("meta", {}).get("seconds", {}), **seconds}
    meta = {"machine": machine(), "date": now, "commit": commit(), "load_before": round(load_before, 2),
            "seconds": {group: merged[group] for group in docs if group in merged}}
    fresh = {key: {**f, "group": group, "measured": now, "reference_ms": reference[group]}
             for group, figures in measured.items() for key, f in figures.items()}
    data = {"meta": meta, **{k: v for k, v in old.items() if k != "meta"}, **fresh}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    PAGE.write_text(render(data, docs))


FIGURE_KEYS = {"median", "min", "max", "n", "unit", "values", "measured", "group", "reference_ms"}


def _num(value: float | None) -> str:
    if value is None:
        return "not reached"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _row(name: str, f: dict[str, Any], *cells: str) -> str:
    return " | ".join([f"| `{name}` ({f['unit']})", _num(f["median"]), _num(f["min"]), _num(f["max"]),
                       str(f["n"]), *cells]) + " |"


def _details(name: str, f: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Rows for the figures nested in a figure (dotted names) and `key = value` lines for its settings."""
    rows: list[str] = []
    settings: list[str] = []
    for key, value in f.items():
        if key in FIGURE_KEYS:
            continue
        if isinstance(value, dict) and "median" in value:
            rows.append(_row(f"{name}.{key}", value))
            more_rows, more_settings = _details(f"{name}.{key}", value)
        elif isinstance(value, dict):
            more_rows, more_settings = _details(f"{name}.{key}", value)
        else:
            more_rows, more_settings = [], [f"{key} {value}"]
        rows += more_rows
        settings += more_settings
    return rows, settings


def render(data: dict[str, Any], docs: dict[str, str]) -> str:
    """The page: machine, date, every figure against its target and the replaced system, then per group
    of figures its method (the measuring function's docstring), details and the command to re-run it."""
    meta, m = data["meta"], data["meta"]["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand. Numbers are for the machine",
        "below; both sides of a ratio are measured in the same run, so the machine's load cancels. Each",
        "figure is the median over its repeats, with min and max. Each group gives how long a fixed piece of",
        "work (`benchmarks/report.py`, `reference_ms`) took just before it ran: the machine's speed then.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}",
        f"- Software: Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, scipy {m['scipy']}, "
        f"optuna {m['optuna']}, paramiko {m['paramiko']}, {m['openssh']}",
        f"- Date: {meta['date']} (commit {meta['commit']}); seconds per group: "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["seconds"].items())
        + f"; total {sum(meta['seconds'].values()):.0f} s. 1-minute load average before the run:"
        f" {meta['load_before']} (other work on the machine shows up in the max columns).",
        "",
        "| Figure | Median | Min | Max | n | Target | Met | Replaced system (source) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        if key in data:
            f = data[key]
            met = "n/a" if target.met is None else "yes" if f["median"] is not None and target.met(f["median"]) \
                else "**no**"
            lines.append(_row(key, f, target.text, met, target.replaced))
    for group, method in docs.items():
        lines += ["", f"## {group}: `python -m benchmarks {group}`", "", method, ""]
        rows: list[str] = []
        settings: list[str] = []
        for key, f in data.items():
            if key != "meta" and f.get("group") == group:
                more_rows, more_settings = _details(key, f)
                rows += [_row(key, f), *more_rows]
                settings += [f"- `{key}`: " + ", ".join(more_settings)] if more_settings else []
                measured = f"Measured {f['measured']}" + (f"; the reference work took {f['reference_ms']} ms"
                                                          if "reference_ms" in f else "")
        if rows:
            lines += ["| Figure | Median | Min | Max | n |", "|---|---|---|---|---|", *rows, "",
                      f"{measured}.", *(["", "Settings:", *settings] if settings else [])]
    return "\n".join(lines) + "\n"
