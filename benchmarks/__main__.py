"""`python -m benchmarks [GROUP ...]`: measure the figure groups (all by default) on this machine, merge
them into benchmarks/results.json and rewrite docs/BENCHMARKS.md."""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import asks, dispatch, forks, objective, scoring, search, step1, tree, trial_time
from benchmarks.report import PAGE, RESULTS, reference_ms, save

GROUPS: dict[str, Callable[[Path], dict[str, Any]]] = {  # the timing-sensitive first, the long science runs last
    "trial": trial_time.run,
    "scoring": scoring.run,
    "dispatch": dispatch.run_dispatch,
    "makespan": dispatch.run_makespan,
    "tree": tree.run_tree,
    "forks": forks.run_fork_cost,
    "asktell": search.run_ask_tell,
    "asks": asks.run_ask_capacity,
    "studycost": dispatch.run_study_cost,
    "loader": step1.run_loader,
    "skips": step1.run_skip_cost,
    "search": search.run_search,
    "noise": objective.run_noise,
    "signal": step1.run_signal,
    "chance": objective.run_chance,
    "confirmed": objective.run_search_confirmed,
}


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: every sshd and worker is stopped on the way out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("groups", nargs="*", metavar="GROUP",
                        help=f"figure groups to measure: {', '.join(GROUPS)} (default: all)")
    groups = parser.parse_args(argv).groups or list(GROUPS)
    if unknown := [g for g in groups if g not in GROUPS]:
        parser.error(f"unknown group {unknown[0]!r} (known: {', '.join(GROUPS)})")
    signal.signal(signal.SIGTERM, _terminate)
    load_before = os.getloadavg()[0]
    docs = {group: inspect.getdoc(fn) or "" for group, fn in GROUPS.items()}
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="step2-bench-") as work:
        for group in groups:
            reference = reference_ms()
            print(f"benchmarks: {group} ... (reference work {reference} ms)", flush=True)
            start = time.monotonic()
            measured = GROUPS[group](Path(work) / group)
            seconds = time.monotonic() - start
            total += seconds
            for key, f in measured.items():
                print(f"  {key}: median {f['median']} {f['unit']} (min {f['min']}, max {f['max']}, n {f['n']})"
                      f" in {seconds:.0f} s", flush=True)
            # a run stopped later keeps this group
            save({group: measured}, {group: seconds}, docs, load_before, {group: reference})
    print(f"benchmarks: wrote {RESULTS.relative_to(Path.cwd())} and {PAGE.relative_to(Path.cwd())}"
          f" in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
