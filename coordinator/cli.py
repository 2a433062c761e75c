"""`coordinator`: the operator's command line on the head node."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from coordinator.live import view_for


def _step2(args: argparse.Namespace) -> int:
    from coordinator.step2 import Step2Error, Step2Options, run_step2
    from worker.contract import Evaluation

    opts = Step2Options(rigs=args.rigs, data=args.data, trials=args.trials, sample_size=args.sample_size,
                        seed=args.seed, timeout_s=args.trial_timeout, max_attempts=args.attempts,
                        quarantine_after=args.quarantine_after, prng=args.prng, mod=args.mod,
                        resume=args.resume, study=args.study, output=args.output,
                        evaluation=Evaluation(args.replicates, args.eval_size, args.nulls, args.objective))
    try:
        with view_for(args.no_tui) as view:
            result = run_step2(opts, view, out=sys.stdout)  # inside the view: the live view's stdout
    except (Step2Error, ValueError, RuntimeError) as exc:
        print(f"coordinator step2: {exc}", file=sys.stderr)
        return 2
    s = result.summary
    print(f"study {result.study}: complete={s.complete} failed={s.failed} retried={s.retried}"
          f" quarantined={len(s.quarantined)} lost_slots={s.lost_slots}")
    for rig, why in {**result.excluded, **s.quarantined}.items():
        print(f"  rig {rig} out: {why}")
    print(f"  study storage: {result.storage}")
    print(f"  trial results: {result.trials_dir}")
    if result.config is None:
        print("  no trial completed: optimal_scorer_config.json not written", file=sys.stderr)
        return 1
    print(f"  best: trial {result.config['_run_context']['trial_number']} accuracy={result.config['accuracy']:.6f}")
    print(f"  optimal config: {result.output}")
    return 0 if s.failed == 0 else 1


def _run(args: argparse.Namespace) -> int:
    from coordinator.script_jobs import run_jobs
    from worker.contract import ContractError

    out_dir = args.out or Path("runs") / f"jobs_{args.jobs_file.stem}_{int(time.time())}"
    try:
        with view_for(args.no_tui) as view:
            summary, outcomes = run_jobs(args.rigs, args.jobs_file, out_dir, view,
                                         max_attempts=args.attempts, quarantine_after=args.quarantine_after)
    except (ContractError, ValueError) as exc:
        print(f"coordinator run: {exc}", file=sys.stderr)
        return 2
    print(f"jobs: complete={summary.complete} failed={summary.failed} retried={summary.retried}; "
          f"outputs and summary.json in {out_dir}")
    return 0 if summary.failed == 0 and summary.complete == len(outcomes) else 1


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from coordinator.health import check_all
    from coordinator.inventory import InventoryError, load_inventory
    from worker.contract import code_hash

    try:
        rigs = load_inventory(args.rigs)
    except InventoryError as exc:
        print(f"coordinator {args.command}: {exc}", file=sys.stderr)
        return 2
    mode = "scipy" if args.command == "check-scipy" else "full"
    rows = check_all(rigs, mode, code_hash())
    if getattr(args, "json", False):
        print(json.dumps([r.to_dict() for r in rows], indent=1))
    else:
        table = Table(title=f"coordinator {args.command}: {args.rigs}")
        columns = ["rig", "host", "python", "scipy"] + (["numpy", "torch", "gpus", "disk GB", "mem GB", "code",
                                                          "rtt ms"] if mode == "full" else []) + ["status"]
        for col in columns:
            table.add_column(col)
        for r in rows:
            d, mods = r.details, r.details.get("modules", {})
            cells = [r.rig, r.address, f"{r.python} {d.get('python', '')}", str(mods.get("scipy") or "-")]
            if mode == "full":
                cells += [str(mods.get("numpy") or "-"), str(mods.get("torch") or "-"), str(d.get("gpus", "-")),
                          str(d.get("disk_free_gb", "-")), str(d.get("mem_available_gb", "-")),
                          str(d.get("code", "-")), str(d.get("rtt_ms", "-"))]
            cells.append("[green]OK[/]" if r.ok else f"[red]FAIL[/] {r.reason}")
            table.add_row(*cells)
        Console(width=None if sys.stdout.isatty() else 200).print(table)
    return 0 if all(r.ok for r in rows) else 1


def _report(args: argparse.Namespace) -> int:
    from coordinator.report import ReportError, report

    try:
        report(args.study, args.null)
    except ReportError as exc:
        print(f"coordinator report: {exc}", file=sys.stderr)
        return 2
    return 0


def _retry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attempts", type=int, default=2, help="attempts per trial or job before FAIL (default: 2)")
    p.add_argument("--quarantine-after", type=int, default=3,
                   help="failures in a row that take a rig out of the run (default: 3)")
    p.add_argument("--no-tui", action="store_true", help="plain lines instead of the live view")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coordinator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("step2", help="run the Step 2 scorer meta-optimisation over the rigs")
    p.add_argument("--rigs", type=Path, default=Path("rigs.toml"), help="inventory (default: rigs.toml)")
    p.add_argument("--data", type=Path, help="data folder: survivors.npz|json, train_history.json, "
                                              "holdout_history.json [, meta.json]")
    p.add_argument("--trials", type=int, default=100, help="trials in the study (default: 100)")
    p.add_argument("--sample-size", type=int, default=450,
                   help="survivors each network trains on (default: 450, the proposal's)")
    p.add_argument("--replicates", type=int, default=4,
                   help="networks per trial, each on its own sample; the value is their mean (default: 4)")
    p.add_argument("--eval-size", type=int, default=1500,
                   help="survivors each network is judged on, its sample among them (default: 1500)")
    p.add_argument("--nulls", type=int, default=200, help="permutations per trial for its chance level (default: 200)")
    p.add_argument("--objective", choices=("spearman_rho", "top_lift"), default="spearman_rho",
                   help="the figure the study optimises (default: spearman_rho, the proposal's)")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed (default: 0)")
    p.add_argument("--trial-timeout", type=float, default=600.0, help="hard limit per attempt, s (default: 600)")
    _retry_options(p)
    p.add_argument("--prng", help="PRNG type (default: from the data's meta.json)")
    p.add_argument("--mod", type=int, help="draw modulus (default: from the data's meta.json)")
    p.add_argument("--study", help="study name (default: scorer_meta_opt_<epoch>)")
    p.add_argument("--resume", metavar="STUDY", help="continue a study after the coordinator stopped")
    p.add_argument("--output", type=Path, default=Path("optimal_scorer_config.json"))
    p.set_defaults(func=_step2)

    for name, text in (("check-scipy", "can every rig's venv import scipy.stats.spearmanr?"),
                       ("check", "full pre-flight of every rig: reachability, versions, GPUs, disk, memory, code")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--rigs", type=Path, default=Path("rigs.toml"), help="inventory (default: rigs.toml)")
        if name == "check":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=_check)

    p = sub.add_parser("run", help="run script jobs (the old coordinator's jobs-file format) over the rigs")
    p.add_argument("--jobs-file", type=Path, required=True)
    p.add_argument("--rigs", type=Path, default=Path("rigs.toml"), help="inventory (default: rigs.toml)")
    p.add_argument("--out", type=Path, help="where outputs and summary.json go (default: runs/jobs_<name>_<epoch>)")
    _retry_options(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("report", help="summarise a study: best trial, accuracy spread, rigs, failures, coverage,"
                                      " parameter importance; plots in runs/<study>/report/")
    p.add_argument("study", nargs="?", help="study name (default: the newest in optuna_studies/)")
    p.add_argument("--null", metavar="STUDY", help="a null-data study whose best the study's best must beat")
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(os.umask(0) | 0o002)  # whatever the caller's umask: no study, job or result file anyone may write
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
