"""`coordinator`: the operator's command line on the head node."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.events import one_line
from coordinator.live import view_for
from coordinator.settings import CONFIRM_REPLICATES, CONFIRM_TOP, DEFAULT_EVALUATION, OPTIMAL_CONFIG
from worker.objective import OBJECTIVES

if TYPE_CHECKING:
    from coordinator.step2 import Step2Result



def _step2(args: argparse.Namespace) -> int:
    from coordinator.interrupt import StopSignals
    from coordinator.step2 import Interrupted, Step2Error, Step2Options, run_step2

    opts = Step2Options(rigs=args.rigs, data=args.data, trials=args.trials, sample_size=args.sample_size,
                        seed=args.seed, timeout_s=args.trial_timeout, max_attempts=args.attempts,
                        quarantine_after=args.quarantine_after, prng=args.prng, mod=args.mod,
                        resume=args.resume, study=args.study, output=args.output,
                        require_all_rigs=args.require_all_rigs, replicates=args.replicates, eval_size=args.eval_size,
                        nulls=args.nulls, objective=args.objective, confirm_top=args.confirm_top,
                        confirm_replicates=args.confirm_replicates)
    with StopSignals() as stop:
        try:
            with view_for(args.no_tui) as view:
                result = run_step2(opts, view, out=sys.stdout, stop_requested=stop.reason)
        except Interrupted as exc:
            print(f"coordinator step2: {exc}", file=sys.stderr)
            return stop.exit_status
        except KeyboardInterrupt:
            print("coordinator step2: stopped at once (a second signal); trials that were running stay open in"
                  f" the study{_resume_hint(opts.resume or opts.study)}", file=sys.stderr)
            return stop.exit_status
        except (Step2Error, ValueError, RuntimeError) as exc:
            print(f"coordinator step2: {exc}", file=sys.stderr)
            return 2
    _print_step2(result)
    if stop.signum is not None:
        return stop.exit_status
    s = result.summary
    return 0 if result.config is not None and s.failed == 0 else 1


def _resume_hint(study: str | None) -> str:
    return f"; resume with: coordinator step2 --resume {study}" if study else ""


def _print_step2(result: Step2Result) -> None:
    """What the run did, which rigs were out and why, where everything is; when the study is unfinished,
    the last line says how to resume it."""
    s = result.summary
    search = s.phases[0]
    print(f"study {result.study}: this run complete={search.complete} failed={search.failed} retried={search.retried}"
          f" unfinished={s.unfinished} rigs_out={len(result.excluded) + len(s.rigs_out)} lost_slots={s.lost_slots};"
          f" the study holds {result.finished} of {result.target} trials finished")
    if len(s.phases) > 1:
        confirm = s.phases[1]
        print(f"  confirmations: complete={confirm.complete} failed={confirm.failed} retried={confirm.retried}")
    for rig, why in {**result.excluded, **s.rigs_out}.items():
        print(f"  rig {rig} out: {one_line(why)}")
    print(f"  study storage: {result.storage}")
    print(f"  trial results: {result.trials_dir}")
    _print_verdicts(result)
    _print_generators(result)
    if result.config is not None:
        context = result.config["_run_context"]
        print(f"  best: trial {context['trial_number']} accuracy={result.config['accuracy']:.6f}"
              + ("" if context["confirmation"] else " (unconfirmed: the search's best)"))
        kept = f" (the previous one is kept as {result.previous})" if result.previous else ""
        print(f"  optimal config: {result.output}{kept}")
    elif s.stopped or s.unfinished:
        print(f"  the study is unfinished: {result.output} not written")
    else:
        print(f"  no trial completed: {result.output} not written", file=sys.stderr)
    if s.stopped:
        print(f"stopped: {one_line(s.stopped)}")
    if s.stopped or s.unfinished or result.finished < result.target:
        print(f"resume with: coordinator step2 --resume {result.study}")


def _print_verdicts(result: Step2Result) -> None:
    """The confirmed optimum beside the search's best, and whether the study found more than chance, in
    words; when the optimised figure finds nothing and the other figure does, that too."""
    from coordinator.confirm import confirmed_share

    if result.optimum is not None:
        o = result.optimum.to_dict()
        value = confirmed_share(o["value"], o["interval_95"])
        print(f"  confirmed: trial {o['trial_number']} {result.objective} {value} on fresh samples; the search's"
              f" best was trial {o['search_best']['trial_number']} at {o['search_best']['value']:.4f}")
    main = result.verdicts[result.objective]
    print(f"  verdict ({result.objective}): {main.words()}")
    for name, other in result.verdicts.items():
        if name != result.objective and other.signal and not main.signal:
            print(f"  but {name} (the top-weighted figure) finds {other.words()}: the top of the ranking holds"
                  " structure the objective does not see")


def _print_generators(result: Step2Result) -> None:
    """On synthetic data whose truth is known: where each generating seed ranked (0: first of the
    survivors a network judged)."""
    for g in result.generators or []:
        made = ", made the holdout" if g["made_the_holdout"] else ""
        where = (f"median rank {g['median_share']:.3f} over {g['replicates']} networks that judged it, in the top 1%"
                 f" in {g['in_top_1pct']}" if g["replicates"] else
                 "in the pool, judged by no network" if g["in_pool"] else "not in the pool (the sieve left it out)")
        print(f"  generating seed {g['seed']} (draws {g['draws'][0]}-{g['draws'][1]}{made}): {where}")


def _run(args: argparse.Namespace) -> int:
    from coordinator.interrupt import StopSignals
    from coordinator.script_jobs import run_jobs
    from worker.contract import ContractError

    out_dir = args.out or Path("runs") / f"jobs_{args.jobs_file.stem}_{int(time.time())}"
    with StopSignals() as stop:
        try:
            with view_for(args.no_tui) as view:
                summary, outcomes, excluded = run_jobs(
                    args.rigs, args.jobs_file, out_dir, view, max_attempts=args.attempts,
                    quarantine_after=args.quarantine_after, require_all_rigs=args.require_all_rigs,
                    stop_requested=stop.reason)
        except KeyboardInterrupt:
            print("coordinator run: stopped at once (a second signal)", file=sys.stderr)
            return stop.exit_status
        except (ContractError, ValueError, RuntimeError) as exc:
            print(f"coordinator run: {exc}", file=sys.stderr)
            return 2
    print(f"jobs: complete={summary.complete} failed={summary.failed} retried={summary.retried}"
          f" unfinished={summary.unfinished}; outputs and summary.json in {out_dir}")
    for rig, why in {**excluded, **summary.rigs_out}.items():
        print(f"  rig {rig} out: {one_line(why)}")
    if summary.stopped:
        print(f"stopped: {one_line(summary.stopped)}")
    if stop.signum is not None:
        return stop.exit_status
    return 0 if summary.failed == 0 and summary.unfinished == 0 and summary.complete == len(outcomes) else 1


CHECK_COLUMNS = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "gpus": "gpus", "disk_free_gb": "disk GB",
                 "mem_available_gb": "mem GB", "connect_ms": "connect ms", "exec_ms": "exec ms", "rtt_ms": "rtt ms",
                 "code": "code"}  # probe field -> column
CHECK_LEGEND = ("connect ms: opening the connection (TCP, key exchange, auth); exec ms: running `true` on a new"
                " channel (what each command costs); rtt ms: a line's round trip on an open channel (median of"
                " 5); code: the rig's code/worker against the head's worker (current, stale, none)")


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from coordinator.health import check_all
    from coordinator.inventory import InventoryError, load_inventory

    try:
        rigs = load_inventory(args.rigs)
    except InventoryError as exc:
        print(f"coordinator {args.command}: {exc}", file=sys.stderr)
        return 2
    full = args.command == "check"
    rows = check_all(rigs, "full" if full else "scipy")
    if getattr(args, "json", False):
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0 if all(r.ok for r in rows) else 1
    table = Table(title=f"coordinator {args.command}: {args.rigs}", caption=CHECK_LEGEND if full else None)
    columns = CHECK_COLUMNS if full else {"scipy": "scipy"}
    for col in ["rig", "host", "python", *columns.values(), "status"]:
        table.add_column(col)
    for r in rows:
        values = {**r.details, **r.details.get("modules", {})}
        cells = [r.rig, r.address, f"{r.python} {r.details.get('python', '')}"]
        cells += [str(values[k]) if values.get(k) is not None else "-" for k in columns]
        table.add_row(*cells, "[green]OK[/]" if r.ok else "[red]FAIL[/]")
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for r in rows:  # whole, below the table: a reason holds commands to copy, which a cell would wrap
        if not r.ok:
            console.print(f"[red]FAIL[/] {r.rig}: {r.reason}", soft_wrap=True, highlight=False)
    return 0 if all(r.ok for r in rows) else 1


def _report(args: argparse.Namespace) -> int:
    from coordinator.report import ReportError, report

    try:
        report(args.study, args.null)
    except ReportError as exc:
        print(f"coordinator report: {exc}", file=sys.stderr)
        return 2
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from coordinator.dashboard import journal_of, serve
    from coordinator.interrupt import StopSignals
    from coordinator.report import ReportError

    try:
        name, journal = journal_of(args.study)
    except ReportError as exc:
        print(f"coordinator dashboard: {exc}", file=sys.stderr)
        return 2
    print(f"study {name} ({journal}, read-only) at http://{args.host}:{args.port}/dashboard; Ctrl-C stops",
          flush=True)
    try:
        with StopSignals() as stop:
            serve(journal, args.host, args.port, stop.reason)
    except OSError as exc:  # the port is taken, say
        print(f"coordinator dashboard: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    return 0


def _retry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attempts", type=int, default=2, help="attempts per trial or job before FAIL (default: 2)")
    p.add_argument("--quarantine-after", type=int, default=3,
                   help="failures in a row that take a rig out of the run (default: 3)")
    p.add_argument("--require-all-rigs", action="store_true",
                   help="stop before dispatch when any rig cannot be used (default: run on the rigs that can)")
    p.add_argument("--no-tui", action="store_true", help="plain lines instead of the live view")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coordinator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("step2", help="run the Step 2 scorer meta-optimisation over the rigs")
    p.add_argument("--rigs", type=Path, default=Path("rigs.toml"), help="inventory (default: rigs.toml)")
    p.add_argument("--data", type=Path, help="data folder: Step 1's output as it is (its survivors NPZ or JSON,"
                                              " optimal_window_config.json, train_history.json, holdout_history"
                                              ".json), or survivors.npz|json, the two histories [, meta.json]")
    p.add_argument("--trials", type=int, help="trials in the study (default: 100; on --resume: the study's,"
                                                 " and a larger N extends it to N)")
    p.add_argument("--sample-size", type=int, help="survivors each network trains on (default: 450, the proposal's)")
    p.add_argument("--replicates", type=int,
                   help="networks per trial, each on its own sample; the value is their mean (default:"
                        f" {DEFAULT_EVALUATION.replicates})")
    p.add_argument("--eval-size", type=int,
                   help="survivors each network is judged on, its sample among them (default:"
                        f" {DEFAULT_EVALUATION.eval_size})")
    p.add_argument("--nulls", type=int,
                   help=f"permutations per trial for its chance level (default: {DEFAULT_EVALUATION.nulls})")
    p.add_argument("--objective", choices=sorted(OBJECTIVES),
                   help="the figure the study optimises (default: spearman_rho, the proposal's)")
    p.add_argument("--confirm-top", type=int,
                   help="the search's best trials evaluated again on fresh samples when it ends; the optimum is the"
                        f" best confirmed (default: {CONFIRM_TOP}; 0: none, the search's best is written unconfirmed)")
    p.add_argument("--confirm-replicates", type=int,
                   help=f"networks per confirmation, each on its own sample (default: {CONFIRM_REPLICATES})")
    p.add_argument("--seed", type=int, help="TPE sampler seed (default: 0)")
    p.add_argument("--trial-timeout", type=float, help="hard limit per attempt, s (default: 600; a resume may"
                                                       " change it)")
    _retry_options(p)
    p.add_argument("--prng", help="PRNG type (default: from the data's meta.json or optimal_window_config.json)")
    p.add_argument("--mod", type=int, help="draw modulus (default: from the data's meta.json; Step 1's folder states"
                                           " none: its sieve compares draws mod 1000)")
    p.add_argument("--study", help="study name (default: scorer_meta_opt_<epoch>)")
    p.add_argument("--resume", metavar="STUDY", help="continue a study; settings that change its results"
                                                     " (data, PRNG, sample size, seed) cannot change")
    p.add_argument("--output", type=Path, default=Path(OPTIMAL_CONFIG),
                   help=f"where the optimal configuration goes (default: {OPTIMAL_CONFIG}); a file already"
                        " there is kept beside it, renamed by its time")
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
    p.add_argument("--null", metavar="STUDY", help="a null-data study of the same pool, sample size, draws and"
                   " evaluation: the two distributions of values are compared")
    p.set_defaults(func=_report)

    p = sub.add_parser("dashboard", help="serve a study in optuna-dashboard (a web page over its journal, read-only)")
    p.add_argument("study", nargs="?", help="study name (default: the newest in optuna_studies/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.set_defaults(func=_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(os.umask(0) | 0o002)  # whatever the caller's umask: no study, job or result file anyone may write
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
