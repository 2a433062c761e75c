"""Loading a trial's data: survivors, train history and holdout history, checked against the job.

Every problem is a ContractError naming the file and what is wrong with it. A warm worker passes the
same `cache` dict to every trial, so repeat trials on unchanged files skip reading, hashing and parsing.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.contract import ContractError, DataRef, TrialPayload, resolve_inside
from worker.files import sha256_file


@dataclass(frozen=True)
class Dataset:
    seeds: np.ndarray  # uint64: negative int64 seeds wrap, as seed mod 2^64
    train: np.ndarray  # int64 draws, oldest first, at stream positions 1..len(train)
    holdout: np.ndarray  # int64 draws right after the train draws
    paths: dict[str, Path]  # role -> resolved file


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


def _parse_survivors(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                names, seeds = npz.files, npz["seeds"] if "seeds" in npz.files else None
        except (zipfile.BadZipFile, ValueError, EOFError) as exc:
            raise ContractError(path, "<file>", f"not a readable NPZ archive: {exc}") from exc
        if seeds is None:
            raise ContractError(path, "seeds", f"NPZ has no 'seeds' array (it has {names})")
        if seeds.ndim != 1 or seeds.dtype.kind not in "iu":
            raise ContractError(path, "seeds", f"must be a 1-D integer array, got {seeds.dtype} {seeds.shape}")
        return seeds.astype(np.uint64)
    obj = _read_json(path)
    if not isinstance(obj, list):
        raise ContractError(path, "seeds", "a JSON survivors file must hold a list")
    seeds = _integers(path, "seeds", obj, "seed")
    bad = next((i for i, s in enumerate(seeds) if not -(2**63) <= s < 2**64), None)
    if bad is not None:
        raise ContractError(path, f"seeds[{bad}]", f"{seeds[bad]} does not fit in 64 bits")
    return np.array([s % 2**64 for s in seeds], dtype=np.uint64)


def _parse_draws(path: Path) -> np.ndarray:
    obj = _read_json(path)
    if not isinstance(obj, list):
        raise ContractError(path, "draws", "a history file must hold a list, oldest draw first")
    try:
        return np.array(_integers(path, "draws", obj, "draw"), dtype=np.int64)
    except OverflowError as exc:
        raise ContractError(path, "draws", "a draw does not fit in 64 bits") from exc


_PARSERS = {"survivors": _parse_survivors, "train_history": _parse_draws, "holdout_history": _parse_draws}


def _load(role: str, path: Path, sha256: str, cache: dict | None) -> np.ndarray:
    """Parsed array of one file, from the cache when neither its expected hash nor its stat changed."""
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
    array = _PARSERS[role](path)
    array.flags.writeable = False  # shared by every trial that hits the cache
    if cache is not None:
        cache[key] = (stamp, array)
    return array


def _check_draws(path: Path, draws: np.ndarray, mod: int) -> None:
    bad = np.flatnonzero((draws < 0) | (draws >= mod))
    if len(bad):
        raise ContractError(path, f"draws[{bad[0]}]", f"{draws[bad[0]]} is outside [0, {mod}) for prng.mod {mod}")


def load_dataset(trial: TrialPayload, root: Path, cache: dict | None = None) -> Dataset:
    """The trial's three files, resolved inside root, hash-checked, parsed and validated against the
    trial's modulus and sample size."""
    paths = {role: resolve_inside(root, ref.path) for role, ref in trial.data.items()}
    seeds, train, holdout = (_load(role, paths[role], trial.data[role].sha256, cache)
                             for role in ("survivors", "train_history", "holdout_history"))
    if len(seeds) == 0:
        raise ContractError(paths["survivors"], "seeds", "the survivor pool is empty")
    if trial.sample_size > len(seeds):
        raise ContractError(paths["survivors"], "seeds",
                            f"sample_size {trial.sample_size} is larger than the pool of {len(seeds)} survivors")
    _check_draws(paths["train_history"], train, trial.mod)
    _check_draws(paths["holdout_history"], holdout, trial.mod)
    if len(holdout) == 0:
        raise ContractError(paths["holdout_history"], "draws", "the holdout history is empty")
    if len(train) <= len(holdout):
        raise ContractError(paths["train_history"], "draws",
                            f"{len(train)} train draws leave nothing to fit features on: the newest "
                            f"{len(holdout)} (as many as the holdout) are the fit's target")
    return Dataset(seeds, train, holdout, paths)


def preload(refs: dict[str, DataRef], root: Path, cache: dict) -> None:
    """Parse these files (role -> ref) into a warm server's `cache` ahead of any trial, so the processes it
    forks share them. Every trial still checks its own files against its job (load_dataset)."""
    for role, ref in refs.items():
        _load(role, resolve_inside(root, ref.path), ref.sha256, cache)
