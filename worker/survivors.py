"""A survivor pool as Step 1 leaves it: each survivor's seed, PRNG family and direction, and the window,
offset and skip range the sieve found it with.

Two files are read. Step 1's NPZ (its converter's 22 arrays, of which these are read: seeds,
prng_type, offset, skip_min, skip_max, skip_mode, window_size) or its JSON records (the same fields,
prng_type and skip_mode as names); and the project's own layout, seeds alone (an NPZ with `seeds`, or a
JSON list of integers or of objects with `seed`), which means: every survivor of the data's family,
forward, offset 0, skip 0. A file gives all the alignment fields or none of them.

Step 1 wrote unknown family names, and java_lcg_hybrid, as code 0: a code-0 survivor belongs to the
data's family (Step 1's run, `prng.type`). Survivors listed twice with the same seed and alignment are
one survivor: the pool keeps the first and counts the others.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.contract import ContractError
from worker.prng import GENERATORS, STEP1_CODES

ALIGNMENT_ARRAYS = ("prng_type", "offset", "skip_min", "skip_max", "skip_mode", "window_size")
SKIP_MODES = {"constant": 0, "variable": 1}


@dataclass(frozen=True)
class Survivors:
    """One entry per survivor, in arrays."""

    seeds: np.ndarray  # uint64
    family: np.ndarray  # uint8: index into `families`
    families: tuple[str | None, ...]  # generator names; None: the data's family (resolved by `of_family`)
    reverse: np.ndarray  # bool
    offset: np.ndarray  # int64: o
    skip_min: np.ndarray  # int64
    skip_max: np.ndarray  # int64
    hybrid: np.ndarray  # bool: found with a variable skip; scored at its best constant skip in range
    window: np.ndarray  # int64: W, the sieve's window (it places a reverse survivor's draws)
    duplicates: int = 0  # rows of the file dropped as repeats of an earlier survivor

    def __len__(self) -> int:
        return len(self.seeds)

    def take(self, rows: np.ndarray) -> Survivors:
        return Survivors(self.seeds[rows], self.family[rows], self.families, self.reverse[rows], self.offset[rows],
                         self.skip_min[rows], self.skip_max[rows], self.hybrid[rows], self.window[rows])

    def of_family(self, default: str, source: str | Path) -> Survivors:
        """The pool with the data's family in place of None; ContractError naming the survivors of
        families this worker does not implement, with their counts."""
        families = tuple(default if f is None else f for f in self.families)
        counts = np.bincount(self.family, minlength=len(families))
        missing = {f: int(c) for f, c in zip(families, counts, strict=True) if c and f not in GENERATORS}
        if missing:
            listed = ", ".join(f"{f} ({c:,})" for f, c in sorted(missing.items()))
            raise ContractError(source, "prng_type", f"{sum(missing.values()):,} survivors of families this worker"
                                f" does not implement: {listed}; implemented: {', '.join(sorted(GENERATORS))}")
        return replace(self, families=families)

    @classmethod
    def unaligned(cls, seeds: np.ndarray) -> Survivors:
        """Survivors given as seeds alone: the data's family, forward, offset 0, skip 0."""
        zeros, no = np.zeros(len(seeds), dtype=np.int64), np.zeros(len(seeds), dtype=bool)
        return cls(np.asarray(seeds, dtype=np.uint64), np.zeros(len(seeds), dtype=np.uint8), (None,), no, zeros,
                   zeros, zeros, no, zeros)


def read_survivors(path: Path) -> Survivors:
    """The pool in an NPZ or JSON survivors file, checked field by field; repeats dropped and counted."""
    pool = _read_npz(path) if path.suffix == ".npz" else _read_json_records(path)
    return _without_repeats(pool)


def _read_npz(path: Path) -> Survivors:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            arrays = {name: npz[name] for name in ("seeds", *ALIGNMENT_ARRAYS) if name in names}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise ContractError(path, "<file>", f"not a readable NPZ archive: {exc}") from exc
    if "seeds" not in arrays:
        raise ContractError(path, "seeds", f"NPZ has no 'seeds' array (it has {sorted(names)})")
    for name, array in arrays.items():
        if array.ndim != 1 or array.dtype.kind not in "iu" or len(array) != len(arrays["seeds"]):
            raise ContractError(path, name, f"must be a 1-D integer array as long as 'seeds', got {array.dtype}"
                                            f" {array.shape}")
    seeds = arrays["seeds"].astype(np.uint64)
    given = [name for name in ALIGNMENT_ARRAYS if name in arrays]
    if not given:
        return Survivors.unaligned(seeds)
    if len(given) < len(ALIGNMENT_ARRAYS):
        missing = sorted(set(ALIGNMENT_ARRAYS) - set(given))
        raise ContractError(path, missing[0], f"missing: the file gives {', '.join(given)} but not "
                                              f"{', '.join(missing)} (a survivor's alignment needs all of them)")
    columns = {name: arrays[name].astype(np.int64) for name in ALIGNMENT_ARRAYS}
    codes, where = np.unique(columns.pop("prng_type"), return_inverse=True)
    unknown = [int(c) for c in codes if int(c) not in STEP1_CODES]
    if unknown:
        i = int(np.flatnonzero(np.isin(arrays["prng_type"], unknown))[0])
        raise ContractError(path, f"prng_type[{i}]", f"unknown code {unknown[0]} (Step 1's codes:"
                                                     f" 0..{max(STEP1_CODES)})")
    kinds = [(None, False) if c == 0 else STEP1_CODES[int(c)] for c in codes]  # code 0: the data's family
    return _aligned(path, seeds, kinds, where, columns)


def _read_json_records(path: Path) -> Survivors:
    try:
        records = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(path, "<file>", f"not valid JSON: {exc}") from exc
    if not isinstance(records, list):
        raise ContractError(path, "seeds", "a JSON survivors file must hold a list")
    seeds = [_int(path, f"seeds[{i}]", r.get("seed") if isinstance(r, dict) else r, "seed")
             for i, r in enumerate(records)]
    bad = next((i for i, s in enumerate(seeds) if not -(2**63) <= s < 2**64), None)
    if bad is not None:
        raise ContractError(path, f"seeds[{bad}]", f"{seeds[bad]} does not fit in 64 bits")
    seeds = np.array([s % 2**64 for s in seeds], dtype=np.uint64)
    aligned = [isinstance(r, dict) and any(k in r for k in ALIGNMENT_ARRAYS) for r in records]
    if not any(aligned):
        return Survivors.unaligned(seeds)
    if not all(aligned):
        raise ContractError(path, f"[{aligned.index(False)}]", "has no alignment fields while other survivors have")
    columns: dict[str, list[int]] = {name: [] for name in ALIGNMENT_ARRAYS if name != "prng_type"}
    kinds: list[tuple[str | None, bool]] = []
    for i, record in enumerate(records):
        family, reverse, hybrid = _family(path, i, record.get("prng_type"))
        kinds.append((family, reverse))
        mode = record.get("skip_mode")
        if isinstance(mode, str):
            if mode not in SKIP_MODES:
                raise ContractError(path, f"[{i}].skip_mode", f"unknown skip_mode {mode!r} (known:"
                                                              f" {', '.join(SKIP_MODES)})")
            mode = SKIP_MODES[mode]
        values = {**record, "skip_mode": hybrid or mode}  # a _hybrid name is a variable-skip survivor
        for name in columns:
            columns[name].append(_int(path, f"[{i}].{name}", values.get(name), name))
    unique = list(dict.fromkeys(kinds))
    where = np.array([unique.index(kind) for kind in kinds]) if len(unique) > 1 else np.zeros(len(kinds), int)
    return _aligned(path, seeds, unique, where, {name: np.array(v, dtype=np.int64) for name, v in columns.items()})


def _family(path: Path, i: int, name: Any) -> tuple[str | None, bool, int]:
    """(family, reverse, hybrid) of a JSON record's prng_type: a name such as java_lcg,
    java_lcg_reverse or java_lcg_hybrid, or Step 1's integer code."""
    if isinstance(name, int) and not isinstance(name, bool):
        if name not in STEP1_CODES:
            raise ContractError(path, f"[{i}].prng_type", f"unknown code {name}")
        return (None, False, 0) if name == 0 else (*STEP1_CODES[name], 0)
    if not isinstance(name, str) or not name:
        raise ContractError(path, f"[{i}].prng_type", f"must be a family name, got {name!r}")
    reverse = name.endswith("_reverse")
    base = name.removesuffix("_reverse")
    return base.removesuffix("_hybrid"), reverse, int(base.endswith("_hybrid"))


def _int(path: Path, field: str, value: Any, key: str) -> int:
    if value is None:
        raise ContractError(path, field, f"object has no {key!r}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContractError(path, field, f"must be an integer, got {type(value).__name__}")
    return value


def _aligned(path: Path, seeds: np.ndarray, kinds: list[tuple[str | None, bool]], where: np.ndarray,
             columns: dict[str, np.ndarray]) -> Survivors:
    """Survivors from Step 1's columns: `kinds[where[i]]` is survivor i's (family, reverse); every value's
    range checked."""
    checks = {"offset": (0, None), "skip_min": (0, None), "skip_mode": (0, 1), "window_size": (1, None)}
    for name, (low, high) in checks.items():
        bad = np.flatnonzero((columns[name] < low) | (columns[name] > (np.inf if high is None else high)))
        if len(bad):
            rule = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ContractError(path, f"{name}[{bad[0]}]", f"{columns[name][bad[0]]} must be {rule}")
    bad = np.flatnonzero(columns["skip_max"] < columns["skip_min"])
    if len(bad):
        raise ContractError(path, f"skip_max[{bad[0]}]", f"{columns['skip_max'][bad[0]]} is below skip_min"
                                                         f" {columns['skip_min'][bad[0]]}")
    families = tuple(dict.fromkeys(family for family, _ in kinds))
    family = np.array([families.index(f) for f, _ in kinds], dtype=np.uint8)[where]
    reverse = np.array([r for _, r in kinds], dtype=bool)[where]
    return Survivors(seeds, family, families, reverse, columns["offset"], columns["skip_min"], columns["skip_max"],
                     columns["skip_mode"] == 1, columns["window_size"])


def _without_repeats(pool: Survivors) -> Survivors:
    """The pool with each (seed, family, alignment) once, in first-seen order. Only rows whose seed
    repeats are compared whole (sorting whole rows of a 1.4M pool takes seconds; its seeds, a tenth)."""
    seeds, counts = np.unique(pool.seeds, return_counts=True)
    if len(seeds) == len(pool):
        return pool
    shared = np.flatnonzero(np.isin(pool.seeds, seeds[counts > 1]))
    table = np.stack([pool.seeds.view(np.int64), pool.family, pool.reverse, pool.offset, pool.skip_min,
                      pool.skip_max, pool.hybrid, pool.window], axis=1)[shared]
    _, first = np.unique(table, axis=0, return_index=True)
    if len(first) == len(shared):
        return pool
    keep = np.sort(np.concatenate([np.setdiff1d(np.arange(len(pool)), shared, assume_unique=True), shared[first]]))
    return replace(pool.take(keep), duplicates=len(pool) - len(keep))
