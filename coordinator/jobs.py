"""Per-trial job files: the run's settings plus one trial's parameters, written once on the head
(`jobs/<study>/trial_NNNN.json`) and pushed to the rig that runs the attempt."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import contract
from worker.contract import DataRef, Job
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
        return {role: DataRef(f"data/{path.name}", contract.sha256_file(path)) for role, path in self.files.items()}


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


def new_run_id() -> str:
    """Unique per coordinator run: result files are scoped by it, so stale ones never match."""
    return time.strftime("r%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class RunSettings:
    study: str
    run_id: str
    code_hash: str
    prng_type: str
    mod: int
    sample_size: int
    timeout_s: float
    data: dict[str, DataRef]

    def job(self, number: int, params: dict[str, Any], attempt: int) -> Job:
        return Job(study=self.study, run_id=self.run_id, trial_id=contract.trial_id(number), attempt=attempt,
                   timeout_s=self.timeout_s, code_hash=self.code_hash, prng_type=self.prng_type, mod=self.mod,
                   sample_size=self.sample_size, data=dict(self.data),
                   params={**params, "optuna_trial_number": number})

    def write(self, job: Job, root: Path = Path(".")) -> Path:
        """The head's copy of the job file (also what is pushed to the rig)."""
        path = root / contract.job_path(job.study, job.trial_id)
        contract.write_json_atomic(path, job.to_dict())
        return path
