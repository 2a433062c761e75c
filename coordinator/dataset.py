"""A study's data on the head: the operator's folder found and read, the whole set loaded once exactly
as a worker will load it (so bad input stops before anything is created, with an error that names the
operator's file), and a copy staged beside the study's archive, the record of what the study used."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import contract, protocol
from worker.contract import DataRef
from worker.files import sha256_file
from worker.prng import GENERATORS

SURVIVOR_FILES = ("survivors.npz", "survivors.json")


class DataError(ValueError):
    """The data set named for a run is missing or incomplete; the message names the file."""


@dataclass(frozen=True)
class DataSet:
    files: dict[str, Path]  # role -> file on the head
    prng_type: str
    mod: int

    @property
    def refs(self) -> dict[str, DataRef]:
        """Where each file lives in a work directory, with its content hash."""
        refs = {}
        for role, path in self.files.items():
            digest = sha256_file(path)
            refs[role] = DataRef(protocol.data_path(digest, path.name), digest)
        return refs


def load_data_dir(directory: Path, prng_type: str | None = None, mod: int | None = None) -> DataSet:
    """A data folder: survivors.npz|json, train_history.json, holdout_history.json, and the PRNG type
    and modulus from the arguments or the folder's meta.json (never a silent default)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such data folder")
    survivors = next((directory / n for n in SURVIVOR_FILES if (directory / n).is_file()), None)
    if survivors is None:
        raise DataError(f"{directory}: no {' or '.join(SURVIVOR_FILES)}")
    files = {"survivors": survivors}
    for role in ("train_history", "holdout_history"):
        files[role] = directory / f"{role}.json"
        if not files[role].is_file():
            raise DataError(f"{files[role]}: missing")
    meta_path = directory / "meta.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON: {exc}") from exc
    prng_arg = prng_type
    prng_type = prng_type or meta.get("prng_type")
    mod = mod or meta.get("mod")
    if not isinstance(prng_type, str):
        raise DataError(f"{meta_path}: field 'prng_type' missing; give --prng or write it in meta.json")
    if prng_type not in GENERATORS:
        where = "--prng" if prng_arg else f"{meta_path}: field 'prng_type'"
        raise DataError(f"{where}: unknown PRNG type {prng_type!r} (known: {', '.join(sorted(GENERATORS))})")
    if not isinstance(mod, int) or isinstance(mod, bool):
        raise DataError(f"{meta_path}: field 'mod' missing or not an integer; give --mod or write it in meta.json")
    return DataSet(files, prng_type, mod)


def check_sources(sources: dict[str, Path], digests: dict[str, str]) -> None:
    """The study's files are where it found them, unchanged (a resume refuses to run on other data)."""
    for role, path in sources.items():
        if not path.is_file() or sha256_file(path) != digests[role]:
            raise DataError(f"{path}: the study's {role} file is missing or changed since the study began")


def stage(sources: dict[str, Path], stage_dir: Path) -> None:
    """Copy the run's data beside its archive, kept with the study (the report reads its pool there)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    for path in sources.values():
        target = stage_dir / path.name
        if not target.exists() or sha256_file(target) != sha256_file(path):
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)


def validate_on_head(payload: contract.TrialPayload, sources: dict[str, Path]) -> int:
    """Load the operator's files exactly as a worker will load their copies, before anything is created
    or sent: bad input stops here, with an error that names the operator's file. Returns the pool size."""
    from worker.data import load_files

    try:
        return len(load_files(payload, sources).seeds)
    except contract.ContractError as exc:
        raise DataError(str(exc)) from exc
