"""Loading a trial's data: survivors, train history and holdout history, checked against the job.

Every problem is a ContractError naming the file and what is wrong with it. A warm worker passes the
same `cache` dict to every trial, so repeat trials on unchanged files skip reading, hashing and parsing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.contract import ContractError, DataRef, TrialPayload, resolve_inside
from worker.files import sha256_file
from worker.survivors import Survivors, read_survivors


@dataclass(frozen=True)
class Dataset:
    survivors: Survivors  # seeds (uint64: negative int64 seeds wrap, as seed mod 2^64) and their alignment
    train: np.ndarray  # int64 draws, oldest first: draws 0..len(train)-1
    holdout: np.ndarray  # int64 draws right after the train draws

    paths: dict[str, Path]  # role -> resolved file

    @property
    def seeds(self) -> np.ndarray:
        return self.survivors.seeds


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(path, "<file>", f"not valid JSON: {exc}") from exc


def _integers(path: Path, field: str, values: list[Any], key: str) -> list[int]:
    """Plain ints, or objects holding the int under `key`."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, dict):
            if key not in v:
                raise ContractError(path, f"{field}[{i}]", f"object has no {key!r}")
            v = v[key]
        if not isinstance(v, int) or isinstance(v, bool):
            raise ContractError(path, f"{field}[{i}]", f"must be an integer, got {type(v).__name__}")
        out.append(v)
    return out


def _parse_draws(path: Path) -> np.ndarray:
    obj = _read_json(path)
    if not isinstance(obj, list):
        raise ContractError(path, "draws", "a history file must hold a list, oldest draw first")
    try:
        return np.array(_integers(path, "draws", obj, "draw"), dtype=np.int64)
    except OverflowError as exc:
        raise ContractError(path, "draws", "a draw does not fit in 64 bits") from exc


_PARSERS = {"survivors": read_survivors, "train_history": _parse_draws, "holdout_history": _parse_draws}


def _load(role: str, path: Path, sha256: str, cache: dict | None) -> Any:
    """One file parsed, from the cache when neither its expected hash nor its stat changed."""
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        key = (str(path), sha256)
        if cache is not None and key in cache and cache[key][0] == stamp:
            return cache[key][1]
        got = sha256_file(path)
    except OSError as exc:
        raise ContractError(path, "<file>", f"cannot read {role} file: {exc.strerror or exc}") from exc
    if got != sha256:
        raise ContractError(path, "sha256", f"file hashes to {got}, the job expects {sha256}")
    parsed = _PARSERS[role](path)
    for array in vars(parsed).values() if isinstance(parsed, Survivors) else (parsed,):
        if isinstance(array, np.ndarray):
            array.flags.writeable = False  # shared by every trial that hits the cache
    if cache is not None:
        cache[key] = (stamp, parsed)
    return parsed


def _check_draws(path: Path, draws: np.ndarray, mod: int) -> None:
    bad = np.flatnonzero((draws < 0) | (draws >= mod))
    if len(bad):
        raise ContractError(path, f"draws[{bad[0]}]", f"{draws[bad[0]]} is outside [0, {mod}) for prng.mod {mod}")


def load_dataset(trial: TrialPayload, root: Path, cache: dict | None = None) -> Dataset:
    """The trial's three files, resolved inside root, hash-checked, parsed and validated against the
    trial's modulus and sample size."""
    return load_files(trial, {role: resolve_inside(root, ref.path) for role, ref in trial.data.items()}, cache)


def load_files(trial: TrialPayload, paths: dict[str, Path], cache: dict | None = None) -> Dataset:
    """The trial's files at these paths (role -> file), checked as `load_dataset` checks them: how the
    head checks the operator's own files before any job names their copies."""
    pool, train, holdout = (_load(role, paths[role], trial.data[role].sha256, cache)
                            for role in ("survivors", "train_history", "holdout_history"))
    pool = pool.of_family(trial.prng_type, paths["survivors"])
    if len(pool) == 0:
        raise ContractError(paths["survivors"], "seeds", "the survivor pool is empty")
    if trial.sample_size > len(pool):
        raise ContractError(paths["survivors"], "seeds",
                            f"sample_size {trial.sample_size} is larger than the pool of {len(pool)} survivors")
    ev = trial.evaluation
    if ev.replicates * ev.eval_size > len(pool):
        raise ContractError(paths["survivors"], "seeds", f"the evaluation needs {ev.replicates * ev.eval_size:,}"
                            f" survivors ({ev.replicates} replicates x eval_size {ev.eval_size}), the pool has"
                            f" {len(pool):,}: lower the replicates or the eval size")
    _check_draws(paths["train_history"], train, trial.mod)
    _check_draws(paths["holdout_history"], holdout, trial.mod)
    if len(holdout) == 0:
        raise ContractError(paths["holdout_history"], "draws", "the holdout history is empty")
    if len(train) <= len(holdout):
        raise ContractError(paths["train_history"], "draws",
                            f"{len(train)} train draws leave nothing to fit features on: the newest "
                            f"{len(holdout)} (as many as the holdout) are the fit's target")
    return Dataset(pool, train, holdout, paths)


def preload(refs: dict[str, DataRef], root: Path, cache: dict) -> None:
    """Parse these files (role -> ref) into a warm server's `cache` ahead of any trial, so the processes it
    forks share them. Every trial still checks its own files against its job (load_dataset)."""
    for role, ref in refs.items():
        _load(role, resolve_inside(root, ref.path), ref.sha256, cache)
