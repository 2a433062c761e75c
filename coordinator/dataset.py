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
from worker.prng import GENERATORS, STEP1_CODES

OWN_SURVIVORS = ("survivors.npz", "survivors.json")
STEP1_NPZ, STEP1_JSON, STEP1_ALL = ("bidirectional_survivors_binary.npz", "bidirectional_survivors.json",
                                    "*_all_binary.npz")
STEP1_CONFIG = "optimal_window_config.json"
TRUTH_FILE = "demo_truth.json"  # synthetic data only: what made the draws (read by the report, never a worker)
HISTORIES = ("train_history", "holdout_history")
STEP1_MOD = 1000  # what Step 1's sieve compares draws modulo; named in the error, never assumed


class DataError(ValueError):
    """The data set named for a run is missing or incomplete; the message names the file."""


@dataclass(frozen=True)
class DataSet:
    files: dict[str, Path]  # role -> file on the head (as named in the folder: a symlink keeps its name)
    prng_type: str
    mod: int
    layout: str  # "step1": Step 1's output folder; "project": survivors + meta.json
    extras: dict[str, Path]  # files read on the head only: Step 1's sidecar and config, a demo's truth

    @property
    def refs(self) -> dict[str, DataRef]:
        """Where each file lives in a work directory, with its content hash."""
        refs = {}
        for role, path in self.files.items():
            digest = sha256_file(path)
            refs[role] = DataRef(protocol.data_path(digest, path.name), digest)
        return refs


def load_data_dir(directory: Path, prng_type: str | None = None, mod: int | None = None) -> DataSet:
    """A data folder: Step 1's output as it is (its survivors NPZ, or its JSON; the NPZ's sidecar,
    optimal_window_config.json, train_history.json, holdout_history.json), or the project's own layout
    (survivors.npz|json, the two histories and meta.json). The data's PRNG family and modulus come from
    the arguments or a file that states them, never from a silent default."""
    if not directory.is_dir():
        raise DataError(f"{directory}: no such data folder")
    survivors = _survivors_file(directory)
    files = {"survivors": survivors, **{role: directory / f"{role}.json" for role in HISTORIES}}
    for role in HISTORIES:
        if not files[role].is_file():
            raise DataError(f"{files[role]}: missing")
    extras = {name: directory / name for name in (STEP1_CONFIG, TRUTH_FILE) if (directory / name).is_file()}
    if survivors.name in OWN_SURVIVORS:
        stated, source = _read_object(directory / "meta.json"), directory / "meta.json"
        family, stated_mod = stated.get("prng_type"), stated.get("mod")
        layout = "project"
    else:
        sidecar = survivors.with_name(survivors.stem + ".meta.json")
        if survivors.suffix == ".npz" and sidecar.is_file():
            _check_encodings(sidecar)
            extras["sidecar"] = sidecar
        stated, source = _read_object(directory / STEP1_CONFIG), directory / STEP1_CONFIG
        family, stated_mod = _base_family(stated.get("prng_type")), stated.get("mod")
        layout = "step1"
    return DataSet(files, _family(prng_type, family, source), _modulus(mod, stated_mod, source, layout), layout,
                   extras)


def _survivors_file(directory: Path) -> Path:
    """The folder's one survivors file: Step 1's NPZ is read rather than the JSON it was converted from;
    any other two candidates are an error that names both."""
    found = [directory / name for name in (*OWN_SURVIVORS, STEP1_NPZ) if (directory / name).is_file()]
    found += sorted(p for p in directory.glob(STEP1_ALL) if p.is_file())
    if not found and (directory / STEP1_JSON).is_file():
        found = [directory / STEP1_JSON]
    if not found:
        raise DataError(f"{directory}: no survivors file: Step 1's {STEP1_NPZ} (or {STEP1_ALL}, or {STEP1_JSON}),"
                        f" or {' or '.join(OWN_SURVIVORS)}")
    if len(found) > 1:
        raise DataError(f"{directory}: two survivors files, {found[0].name} and {found[1].name}: keep one in the"
                        " folder (or a folder of symlinks to the files of one run)")
    return found[0]


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from an optional file ({} when there is none)."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: must hold a JSON object")
    return obj


def _check_encodings(sidecar: Path) -> None:
    """The converter's sidecar states the prng_type codes it used: they must be the ones this reads."""
    encodings = _read_object(sidecar).get("encodings", {}).get("prng_type")
    if encodings is None:
        return
    ours = {f"{family}{'_reverse' if reverse else ''}": code for code, (family, reverse) in STEP1_CODES.items()}
    differ = sorted(name for name in set(encodings) | set(ours) if encodings.get(name) != ours.get(name))
    if differ:
        raise DataError(f"{sidecar}: field 'encodings.prng_type': codes for {', '.join(differ)} differ from Step 1's"
                        f" table this worker reads ({ours})")


def _base_family(name: Any) -> Any:
    """Step 1's run names its PRNG: java_lcg, or a variant of it (java_lcg_hybrid, ..._reverse)."""
    return name.removesuffix("_reverse").removesuffix("_hybrid") if isinstance(name, str) else name


def _family(given: str | None, stated: Any, source: Path) -> str:
    where = "--prng" if given else f"{source}: field 'prng_type'"
    family = given or stated
    if not isinstance(family, str):
        missing = f"{source} has no field 'prng_type'" if source.is_file() else f"no {source}"
        raise DataError(f"{missing}: give the data's PRNG family with --prng"
                        f" (known: {', '.join(sorted(GENERATORS))})")
    if family not in GENERATORS:
        raise DataError(f"{where}: unknown PRNG type {family!r} (known: {', '.join(sorted(GENERATORS))})")
    return family


def _modulus(given: int | None, stated: Any, source: Path, layout: str) -> int:
    mod = given or stated
    if isinstance(mod, int) and not isinstance(mod, bool):
        return mod
    if layout == "step1":
        raise DataError(f"{source.parent}: Step 1's output does not state the draws' modulus; its sieve compares"
                        f" draws mod {STEP1_MOD}: give --mod {STEP1_MOD}")
    missing = f"{source}: field 'mod' missing or not an integer" if source.is_file() else f"no {source}"
    raise DataError(f"{missing}: give --mod or write it in meta.json")


def check_sources(sources: dict[str, Path], digests: dict[str, str]) -> None:
    """The study's files are where it found them, unchanged (a resume refuses to run on other data)."""
    for role, path in sources.items():
        if not path.is_file() or sha256_file(path) != digests[role]:
            raise DataError(f"{path}: the study's {role} file is missing or changed since the study began")


@dataclass(frozen=True)
class Checked:
    pool: int  # survivors in the pool, repeats counted once
    duplicates: int  # rows of the survivors file that repeat an earlier survivor
    hybrid: int  # variable-skip survivors, scored at their best constant skip


def stage(sources: dict[str, Path], stage_dir: Path) -> None:
    """Copy the run's data beside its archive, kept with the study (the report reads its pool there)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    for path in sources.values():
        target = stage_dir / path.name
        if not target.exists() or sha256_file(target) != sha256_file(path):
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)


def validate_on_head(payload: contract.TrialPayload, sources: dict[str, Path]) -> Checked:
    """Load the operator's files exactly as a worker will load their copies, before anything is created
    or sent: bad input stops here, with an error that names the operator's file."""
    from worker.data import load_files

    try:
        survivors = load_files(payload, sources).survivors
    except contract.ContractError as exc:
        raise DataError(str(exc)) from exc
    return Checked(len(survivors), survivors.duplicates, int(survivors.hybrid.sum()))
