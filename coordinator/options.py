"""`coordinator step2`'s options, checked before anything is created, and the settings a study records.

A study records the settings it was started with (the study's attributes), so a resume needs no
arguments. Some of them change what the study computes: `FIXED_ON_RESUME` names those, each with the
option that sets it, and `check_resume` compares them in one place, so a resume that gives one of these
options with another value is refused, naming it. Everything else a resume may change (the time limit,
retries, rigs, output), and `--trials N` extends the study to N trials.

`plan_run` does every check that needs no rig: options, the inventory, the study's name, the data
(loaded exactly as a worker loads it) and the output path. It reads and creates nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator import dataset, results
from coordinator.inventory import Rig, load_inventory
from coordinator.settings import (
    CONFIRM_REPLICATES,
    CONFIRM_TOP,
    DEFAULT_EVALUATION,
    OPTIMAL_CONFIG,
    RunSettings,
    confirm_evaluation,
    new_run_id,
)
from coordinator.study import STUDIES_DIR, Study, storage_path, study_names
from worker import VERSION, contract
from worker.contract import DATA_ROLES, DataRef, Evaluation
from worker.objective import OBJECTIVES
from worker.prng import GENERATORS

DEFAULTS: dict[str, Any] = {"trials": 100, "sample_size": 450, "seed": 0, "timeout_s": 600.0,
                            "evaluation": dataclasses.asdict(DEFAULT_EVALUATION),
                            "confirm": {"top": CONFIRM_TOP, "replicates": CONFIRM_REPLICATES}}

# Recorded settings (dotted paths into the study's attributes) that change the study's results, with the
# option that sets each: a resume may not change them.
FIXED_ON_RESUME: dict[str, str] = {
    "prng.type": "--prng",
    "prng.mod": "--mod",
    "sample_size": "--sample-size",
    "seed": "--seed",
    "evaluation.replicates": "--replicates",
    "evaluation.eval_size": "--eval-size",
    "evaluation.nulls": "--nulls",
    "evaluation.objective": "--objective",
    "confirm.top": "--confirm-top",
    "confirm.replicates": "--confirm-replicates",
    **{f"data.{role}.sha256": "--data" for role in DATA_ROLES},
}


class OptionError(ValueError):
    """An option or input the run cannot start with; the message names it."""


@dataclass(frozen=True)
class Step2Options:
    """What the operator asked for. None: not given (a new study takes DEFAULTS, a resume what the study
    recorded)."""

    rigs: Path = Path("rigs.toml")
    data: Path | None = None
    trials: int | None = None
    sample_size: int | None = None
    seed: int | None = None
    timeout_s: float | None = None
    max_attempts: int = 2
    quarantine_after: int = 3
    prng: str | None = None
    mod: int | None = None
    resume: str | None = None
    study: str | None = None
    output: Path = Path(OPTIMAL_CONFIG)
    require_all_rigs: bool = False
    replicates: int | None = None
    eval_size: int | None = None
    nulls: int | None = None
    objective: str | None = None
    confirm_top: int | None = None
    confirm_replicates: int | None = None
    studies_dir: Path = STUDIES_DIR
    runs_dir: Path = results.RUNS_DIR


@dataclass(frozen=True)
class Plan:
    """A run that passed every check that needs no rig."""

    name: str
    storage: Path
    resume: bool
    rigs: list[Rig]
    meta: dict[str, Any]  # the study's settings for this run
    record: dict[str, Any]  # what the study's attributes get before the run: all of meta for a new study
    settings: RunSettings
    sources: dict[str, Path]  # role -> the operator's data file
    pool: int
    confirm_top: int  # the search's best trials to confirm (0: none)
    confirm: Evaluation  # a confirmation's design
    notes: list[str] = field(default_factory=list)


def check_options(opts: Step2Options) -> None:
    """Every option on its own (no file read): each problem named by its option."""
    problems = []
    for option, value, low in (("--trials", opts.trials, 1), ("--sample-size", opts.sample_size, 2),
                               ("--attempts", opts.max_attempts, 1), ("--quarantine-after", opts.quarantine_after, 1),
                               ("--mod", opts.mod, 2), ("--replicates", opts.replicates, 1),
                               ("--eval-size", opts.eval_size, 2), ("--nulls", opts.nulls, 0),
                               ("--confirm-top", opts.confirm_top, 0),
                               ("--confirm-replicates", opts.confirm_replicates, 1)):
        if value is not None and value < low:
            problems.append(f"{option} must be at least {low}, got {value}")
    if opts.seed is not None and not 0 <= opts.seed < 2**32:
        problems.append(f"--seed must be in 0..{2**32 - 1}, got {opts.seed}")
    if opts.timeout_s is not None and not (math.isfinite(opts.timeout_s) and opts.timeout_s > 0):
        problems.append(f"--trial-timeout must be a positive number of seconds, got {opts.timeout_s:g}")
    sample = DEFAULTS["sample_size"] if opts.sample_size is None else opts.sample_size
    if opts.eval_size is not None and opts.eval_size < sample:
        problems.append(f"--eval-size {opts.eval_size} is below the sample size {sample}: each network is judged"
                        " on its own sample at least")
    if opts.objective is not None and opts.objective not in OBJECTIVES:
        problems.append(f"--objective: unknown {opts.objective!r} (known: {', '.join(sorted(OBJECTIVES))})")
    if opts.prng is not None and opts.prng not in GENERATORS:
        problems.append(f"--prng: unknown PRNG type {opts.prng!r} (known: {', '.join(sorted(GENERATORS))})")
    for option, name in (("--study", opts.study), ("--resume", opts.resume)):
        if name is not None and not contract.is_safe_name(name):
            problems.append(f"{option} {name!r}: a study name is 1-128 letters, digits, '_', '.' or '-',"
                            " starting with a letter or digit")
    if opts.resume is None and opts.data is None:
        problems.append("--data is required for a new study")
    if opts.resume is not None and opts.study not in (None, opts.resume):
        problems.append(f"--study {opts.study} and --resume {opts.resume} name two studies; give one")
    problems += _output_problems(opts.output)
    if problems:
        raise OptionError("; ".join(problems))


def _output_problems(path: Path) -> list[str]:
    folder = path.parent
    if path.is_dir():
        return [f"--output {path}: is a folder, not a file"]
    if not folder.is_dir():
        return [f"--output {path}: no folder {folder}"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"--output {path}: cannot write in {folder}"]
    return []


def plan_run(opts: Step2Options, code: str, started: float) -> Plan:
    """Check everything that needs no rig, creating nothing; what the run will do."""
    check_options(opts)
    rigs = load_inventory(opts.rigs)
    name, meta, record, notes = _resumed(opts, code) if opts.resume else _new(opts, code, started)
    sources = {role: Path(d["source"]) for role, d in meta["data"].items()}
    dataset.check_sources(sources, {role: d["sha256"] for role, d in meta["data"].items()})
    settings = RunSettings(study=name, run_id=new_run_id(), code_hash=code, prng_type=meta["prng"]["type"],
                           mod=meta["prng"]["mod"], sample_size=meta["sample_size"], timeout_s=meta["timeout_s"],
                           data={role: DataRef(d["path"], d["sha256"]) for role, d in meta["data"].items()},
                           evaluation=Evaluation(**meta["evaluation"]))
    checked = dataset.validate_on_head(settings.job(0, {}, 1).payload, sources)
    if checked.duplicates:
        notes.append(f"{sources['survivors']}: {checked.duplicates:,} rows repeat an earlier survivor (same seed and"
                     f" alignment); the pool counts each survivor once: {checked.pool:,}")
    confirm = confirm_evaluation(settings.evaluation, meta["confirm"]["replicates"])
    if meta["confirm"]["top"] and confirm.replicates * confirm.eval_size > checked.pool:
        raise OptionError(f"--confirm-replicates {confirm.replicates}: a confirmation judges {confirm.replicates} x"
                          f" {confirm.eval_size} survivors, the pool has {checked.pool:,}: lower it or --eval-size")
    return Plan(name, storage_path(name, opts.studies_dir), opts.resume is not None, rigs, meta, record, settings,
                sources, checked.pool, meta["confirm"]["top"], confirm, notes)


Settings = tuple[str, dict[str, Any], dict[str, Any], list[str]]  # name, meta, what to record, notes


def _new(opts: Step2Options, code: str, started: float) -> Settings:
    """A new study's name and the settings it will record."""
    assert opts.data is not None
    name = opts.study or f"scorer_meta_opt_{int(started)}"
    journal = storage_path(name, opts.studies_dir)
    if journal.exists():
        raise OptionError(f"--study {name}: {journal} already holds that study; resume it with --resume {name},"
                          " or choose another name")
    data = dataset.load_data_dir(opts.data, opts.prng, opts.mod)
    given = _given(opts, data)
    meta = {"code_hash": code, "worker_version": VERSION, **DEFAULTS, **given,
            **{key: {**DEFAULTS[key], **given.get(key, {})} for key in ("evaluation", "confirm")},
            "prng": {"type": data.prng_type, "mod": data.mod}, "layout": data.layout,
            "extras": {name: os.path.abspath(path) for name, path in data.extras.items()}}
    return name, meta, meta, []


def _resumed(opts: Step2Options, code: str) -> Settings:
    """The study to resume, the settings it recorded (with what a resume may change, changed), and notes."""
    assert opts.resume is not None
    journal = storage_path(opts.resume, opts.studies_dir)
    if not journal.is_file():
        known = ", ".join(study_names(opts.studies_dir)) or "none"
        raise OptionError(f"--resume {opts.resume}: no study at {journal} (studies there: {known})")
    reader = Study(opts.resume, journal, seed=0, create=False, writer=False)
    recorded, held = reader.meta(), len(reader.trials())
    missing = [key for key in ("evaluation", "confirm") if key not in recorded]
    if missing:
        raise OptionError(f"--resume {opts.resume}: the study was started by an earlier version that recorded no"
                          f" {' or '.join(missing)} design; start a new study (--study NAME)")
    prng = recorded["prng"]
    data = dataset.load_data_dir(opts.data, opts.prng or prng["type"], opts.mod or prng["mod"]) if opts.data else None
    given = _given(opts, data)
    check_resume(recorded, given)
    if opts.trials is not None and opts.trials < held:
        raise OptionError(f"--trials {opts.trials}: study {opts.resume} already holds {held} trials; a resume"
                          " can extend a study, not shrink it")
    record = {key: given[key] for key in ("trials", "timeout_s", "data") if key in given}  # data: where it is now
    notes = []
    if recorded.get("code_hash") != code:
        notes.append(f"the worker code changed since this study began ({str(recorded.get('code_hash'))[:12]} ->"
                     f" {code[:12]}); remaining trials run the current code")
    return opts.resume, {**recorded, **record}, record, notes


def _given(opts: Step2Options, data: dataset.DataSet | None) -> dict[str, Any]:
    """The settings the options give, shaped as the study records them; what was not given is absent."""
    given: dict[str, Any] = {key: value for key, value in (
        ("trials", opts.trials), ("sample_size", opts.sample_size), ("seed", opts.seed),
        ("timeout_s", opts.timeout_s)) if value is not None}
    prng = {key: value for key, value in (("type", opts.prng), ("mod", opts.mod)) if value is not None}
    if prng:
        given["prng"] = prng
    evaluation = {key: value for key, value in (("replicates", opts.replicates), ("eval_size", opts.eval_size),
                                                ("nulls", opts.nulls), ("objective", opts.objective))
                  if value is not None}
    if evaluation:
        given["evaluation"] = evaluation
    confirm = {key: value for key, value in (("top", opts.confirm_top), ("replicates", opts.confirm_replicates))
               if value is not None}
    if confirm:
        given["confirm"] = confirm
    if data is not None:
        given["data"] = {role: {"path": ref.path, "sha256": ref.sha256, "source": os.path.abspath(data.files[role])}
                         for role, ref in data.refs.items()}  # abspath, not resolve: a symlink keeps its own name
    return given


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted paths: {"prng": {"mod": 1000}} -> {"prng.mod": 1000}."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def check_resume(recorded: dict[str, Any], given: dict[str, Any]) -> None:
    """Refuse a resume whose options change a setting that changes the study's results."""
    old, new = _flat(recorded), _flat(given)
    changed = [f"{option} gives {key} {new[key]!r}, the study recorded {old.get(key)!r}"
               for key, option in FIXED_ON_RESUME.items() if key in new and new[key] != old.get(key)]
    if changed:
        raise OptionError("; ".join(changed) + ": a resumed study keeps every setting that changes its results"
                          " (start a new study with --study NAME to change one)")
