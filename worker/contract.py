"""The job and result file formats: the one contract between the coordinator and the worker.

Both halves import this module, so a field is defined, validated and written in one place.
Job files are read by the worker; result files are written by the worker and validated by the
coordinator. Every path inside a job is relative to the rig's work directory and may not leave it.

A job is an envelope (who, which attempt, how long, which code) around a payload of its kind: the kind
parses its own fields and says what a valid result of it holds. Step 2's trial is the one kind today.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from worker import VERSION, objective, protocol

JOB_FORMAT = 1
RESULT_FORMAT = 1
DATA_ROLES = ("survivors", "train_history", "holdout_history")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TRIAL_ID = re.compile(r"^(trial|confirm)_\d{4,}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class JobKind(StrEnum):
    STEP2_TRIAL = "step2_trial"
    STEP2_CONFIRM = "step2_confirm"


class Status(StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class ContractError(ValueError):
    """A job or result file that breaks the contract; the message names the file and field (a field
    in angle brackets, `<file>` or `<root>`, stands for the whole file and is not named)."""

    def __init__(self, source: str | os.PathLike[str], field: str, problem: str):
        self.source, self.field, self.problem = str(source), field, problem
        super().__init__(f"{source}: {problem}" if field.startswith("<") else f"{source}: field '{field}': {problem}")


@dataclass(frozen=True)
class DataRef:
    path: str  # relative to the work directory
    sha256: str


class Payload(Protocol):
    """What one kind of job carries, and what its results hold beyond the envelope."""

    kind: ClassVar[JobKind]

    def to_dict(self) -> dict[str, Any]:
        """The payload's fields in the job file (beside the envelope's)."""

    def identity(self) -> dict[str, Any]:
        """The payload's part of a result's identity."""

    def check_result(self, obj: dict[str, Any], source: str, status: Status) -> None:
        """Raise ContractError when a result of this job breaks the kind's rules."""

    def value(self, record: dict[str, Any]) -> float | None:
        """The number a valid success reports (None: the kind reports none)."""

    def chance(self, record: dict[str, Any]) -> tuple[float, float] | None:
        """The value's chance level, (mean, s.d.) of its null, where the result holds one."""


@dataclass(frozen=True)
class Evaluation:
    """How a trial's value is estimated: `replicates` networks, each trained on its own sample of
    `sample_size` survivors and judged on `eval_size` survivors (its training sample and others, none
    shared between replicates); `nulls` permutations give each figure's chance level; `objective` names
    the figure the study optimises."""

    replicates: int
    eval_size: int
    nulls: int
    objective: str

    @classmethod
    def parse(cls, obj: dict[str, Any], source: str | os.PathLike[str], sample_size: int) -> Evaluation:
        ev = _get(source, obj, "evaluation", dict)
        replicates, eval_size, nulls = (_get(source, ev, key, int, "evaluation.")
                                        for key in ("replicates", "eval_size", "nulls"))
        if replicates < 1:
            raise ContractError(source, "evaluation.replicates", f"must be >= 1, got {replicates}")
        if eval_size < sample_size:
            raise ContractError(source, "evaluation.eval_size", f"{eval_size} is below sample_size {sample_size}:"
                                                                " each network is judged on its own sample at least")
        if nulls < 0:
            raise ContractError(source, "evaluation.nulls", f"must be >= 0, got {nulls}")
        name = _get(source, ev, "objective", str, "evaluation.")
        if name not in objective.OBJECTIVES:
            raise ContractError(source, "evaluation.objective",
                                f"{name!r} is not one of {sorted(objective.OBJECTIVES)}")
        return cls(replicates, eval_size, nulls, name)


CONFIRM_TAG = 0xC0_0F_17_3D  # seeds a confirmation's samples apart from every trial's (which are its number)


@dataclass(frozen=True)
class TrialPayload:
    """A Step 2 trial: the data, the PRNG and modulus, the sample size, how the value is estimated and
    the trial's parameters (with `optuna_trial_number`, which seeds everything random in the trial). Its
    result's `accuracy` is the objective's value on success and null on error."""

    kind: ClassVar[JobKind] = JobKind.STEP2_TRIAL
    prng_type: str
    mod: int
    sample_size: int
    data: dict[str, DataRef]
    params: dict[str, Any]
    evaluation: Evaluation

    @property
    def trial_number(self) -> int:
        return int(self.params["optuna_trial_number"])

    @property
    def seed(self) -> list[int]:
        """What seeds the samples: the trial number, as the proposal has it."""
        return [self.trial_number]

    def task_id(self) -> str:
        return trial_id(self.trial_number)

    def net_seed(self, replicate: int) -> int:
        """Seeds replicate k's network: the trial number for the first, as ever; derived for the others."""
        if replicate == 0 and self.kind == JobKind.STEP2_TRIAL:
            return self.trial_number
        return int(np.random.SeedSequence([*self.seed, replicate]).generate_state(1)[0])

    @classmethod
    def parse(cls, obj: dict[str, Any], source: str | os.PathLike[str]) -> TrialPayload:
        params = _get(source, obj, "params", dict)
        number = _get(source, params, "optuna_trial_number", int, "params.")
        if number < 0:
            raise ContractError(source, "params.optuna_trial_number", "must be >= 0")
        prng = _get(source, obj, "prng", dict)
        prng_type = _get(source, prng, "type", str, "prng.")
        mod = _get(source, prng, "mod", int, "prng.")
        if mod < 2:
            raise ContractError(source, "prng.mod", f"must be >= 2, got {mod}")
        sample_size = _get(source, obj, "sample_size", int)
        if sample_size < 2:
            raise ContractError(source, "sample_size", f"must be >= 2, got {sample_size}")
        data_obj = _get(source, obj, "data", dict)
        data = {}
        for role in DATA_ROLES:
            ref = _get(source, data_obj, role, dict, "data.")
            path = safe_relpath(source, f"data.{role}.path", ref.get("path"))
            digest = _get(source, ref, "sha256", str, f"data.{role}.")
            if not _SHA256.match(digest):
                raise ContractError(source, f"data.{role}.sha256", "must be a sha256 hex digest")
            data[role] = DataRef(path, digest)
        return cls(prng_type, mod, sample_size, data, dict(params), Evaluation.parse(obj, source, sample_size))

    def to_dict(self) -> dict[str, Any]:
        return {"prng": {"type": self.prng_type, "mod": self.mod}, "sample_size": self.sample_size,
                "data": {role: {"path": ref.path, "sha256": ref.sha256} for role, ref in self.data.items()},
                "params": dict(self.params), "evaluation": dataclasses.asdict(self.evaluation)}

    def identity(self) -> dict[str, Any]:
        return {"optuna_trial_number": self.trial_number, "params": self.params}

    def check_id(self, source: str | os.PathLike[str], tid: str) -> None:
        if tid != self.task_id():
            raise ContractError(source, "trial_id", f"{tid!r} does not match optuna_trial_number {self.trial_number}"
                                                    f" ({self.kind} jobs are {self.task_id()})")

    def check_result(self, obj: dict[str, Any], source: str, status: Status) -> None:
        accuracy = obj.get("accuracy")
        if status == Status.ERROR:
            if accuracy is not None:
                raise ContractError(source, "accuracy", "an error result must not carry an accuracy")
            return
        if isinstance(accuracy, bool) or not isinstance(accuracy, int | float) or not math.isfinite(accuracy):
            raise ContractError(source, "accuracy", f"a success needs a finite number, got {accuracy!r}")
        problem = objective.out_of_range(accuracy, self.evaluation.objective)
        if problem:
            raise ContractError(source, "accuracy", problem)

    def value(self, record: dict[str, Any]) -> float:
        return float(record["accuracy"])

    def chance(self, record: dict[str, Any]) -> tuple[float, float] | None:
        figure = record.get("diagnostics", {}).get("figures", {}).get(self.evaluation.objective, {})
        sd = figure.get("null_sd")
        return None if sd is None else (float(figure["null_mean"]), float(sd))


@dataclass(frozen=True)
class ConfirmPayload(TrialPayload):
    """A search's candidate evaluated again on fresh samples: the trial's parameters, seeded apart from
    every trial (so no sample a trial was chosen on is reused)."""

    kind: ClassVar[JobKind] = JobKind.STEP2_CONFIRM

    @property
    def seed(self) -> list[int]:
        return [CONFIRM_TAG, self.trial_number]

    def task_id(self) -> str:
        return confirm_id(self.trial_number)


PAYLOADS: dict[str, type[TrialPayload]] = {kind.kind: kind for kind in (TrialPayload, ConfirmPayload)}


@dataclass(frozen=True)
class Job:
    """The envelope every kind shares, around its payload."""

    study: str
    run_id: str
    trial_id: str
    attempt: int
    timeout_s: float
    code_hash: str
    payload: TrialPayload

    @property
    def kind(self) -> JobKind:
        return self.payload.kind

    @property
    def trial_number(self) -> int:
        return self.payload.trial_number

    @property
    def path(self) -> str:
        """The job file, relative to a work directory."""
        return protocol.job_path(self.study, self.run_id, self.trial_id, self.attempt)

    @property
    def result_path(self) -> str:
        return protocol.result_path(self.study, self.run_id, self.trial_id, self.attempt)

    @property
    def log_path(self) -> str:
        return protocol.log_path(self.study, self.run_id, self.trial_id, self.attempt)

    def identity(self) -> dict[str, Any]:
        return {"study": self.study, "run_id": self.run_id, "trial_id": self.trial_id, **self.payload.identity(),
                "attempt": self.attempt}

    def to_dict(self) -> dict[str, Any]:
        return {"format": JOB_FORMAT, "kind": str(self.kind), "study": self.study, "run_id": self.run_id,
                "trial_id": self.trial_id, "attempt": self.attempt, "timeout_s": self.timeout_s,
                "code_hash": self.code_hash, **self.payload.to_dict()}


def trial_id(number: int) -> str:
    return f"trial_{number:04d}"


def confirm_id(number: int) -> str:
    return f"confirm_{number:04d}"


def is_safe_name(value: Any) -> bool:
    """Whether value may name a study or a run: it becomes a folder name in every work directory."""
    return isinstance(value, str) and bool(_SAFE_NAME.match(value))


def safe_relpath(source: str | os.PathLike[str], field: str, value: Any) -> str:
    """A relative path that stays inside its root: no absolute paths, no '..', no odd characters."""
    if not isinstance(value, str) or not value:
        raise ContractError(source, field, "must be a non-empty relative path")
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ContractError(source, field, f"path {value!r} must stay inside the work directory")
    if not all(_SAFE_NAME.match(p) for p in parts):
        raise ContractError(source, field, f"path {value!r} has characters outside [A-Za-z0-9_.-]")
    return value


def resolve_inside(root: Path, rel: str) -> Path:
    """Join a checked relative path to root and make sure symlinks do not lead out of it."""
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise ContractError(rel, "path", f"resolves outside the work directory {root}")
    return full


def _get(source: Any, obj: dict[str, Any], field: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
    name = prefix + field
    if field not in obj:
        raise ContractError(source, name, "is missing")
    value = obj[field]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ContractError(source, name, f"must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ContractError(source, name, f"must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", dict: "an object",
                        list: "a list", bool: "a boolean"}.get(k, k.__name__) for k in kinds)


def _name(source: Any, obj: dict[str, Any], field: str, pattern: re.Pattern[str] = _SAFE_NAME) -> str:
    value = _get(source, obj, field, str)
    if not pattern.match(value):
        raise ContractError(source, field, f"{value!r} is not a valid name ({pattern.pattern})")
    return value


def parse_job(obj: Any, source: str | os.PathLike[str] = "<job>") -> Job:
    """Validate a decoded job file. Names and paths are checked so no field can leave the work
    directory or reach a shell; the trial's science checks its own parameters."""
    if not isinstance(obj, dict):
        raise ContractError(source, "<root>", "a job file must hold a JSON object")
    if _get(source, obj, "format", int) != JOB_FORMAT:
        raise ContractError(source, "format", f"unsupported job format {obj['format']} (this reads {JOB_FORMAT})")
    kind = _get(source, obj, "kind", str)
    if kind not in PAYLOADS:
        raise ContractError(source, "kind", f"{kind!r} is not one of {sorted(PAYLOADS)}")
    payload = PAYLOADS[kind].parse(obj, source)
    tid = _name(source, obj, "trial_id", _TRIAL_ID)
    payload.check_id(source, tid)
    attempt = _get(source, obj, "attempt", int)
    if attempt < 1:
        raise ContractError(source, "attempt", "must be >= 1")
    timeout_s = float(_get(source, obj, "timeout_s", (int, float)))
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ContractError(source, "timeout_s", "must be a positive number of seconds")
    code = _get(source, obj, "code_hash", str)
    if not _SHA256.match(code):
        raise ContractError(source, "code_hash", "must be a sha256 hex digest")
    return Job(study=_name(source, obj, "study"), run_id=_name(source, obj, "run_id"), trial_id=tid,
               attempt=attempt, timeout_s=timeout_s, code_hash=code, payload=payload)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Decode a JSON file; any failure is a ContractError naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ContractError(path, "<file>", f"cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(path, "<file>", f"not valid JSON: {exc}") from exc


def load_job(path: str | os.PathLike[str]) -> Job:
    return parse_job(read_json(path), path)


def partial_identity(obj: Any) -> dict[str, Any] | None:
    """The identity fields of a job that failed validation, if they alone are sound: enough to
    write an error result where the coordinator looks for it. None when they are not."""
    if not isinstance(obj, dict):
        return None
    names = [obj.get(k) for k in ("study", "run_id", "trial_id")]
    attempt = obj.get("attempt")
    if not all(is_safe_name(n) for n in names) or not _TRIAL_ID.match(names[2]):
        return None
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        return None
    params = obj.get("params") if isinstance(obj.get("params"), dict) else {}
    return {"study": names[0], "run_id": names[1], "trial_id": names[2],
            "optuna_trial_number": int(names[2].rpartition("_")[2]), "attempt": attempt, "params": params}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def make_result(
    identity: dict[str, Any],
    *,
    accuracy: float | None,
    error: str | None,
    device: str = "",
    sample_indices: list[int] | None = None,
    timings: dict[str, float] | None = None,
    diagnostics: dict[str, Any] | None = None,
    code_hash: str = "",
) -> dict[str, Any]:
    """A result record for a job's identity (Job.identity() or partial_identity()). A success
    carries a finite accuracy; an error carries None, never a number that could pass for a value."""
    status = Status.ERROR if error is not None else Status.SUCCESS
    if status == Status.SUCCESS and (accuracy is None or not math.isfinite(accuracy)):
        raise ValueError("a successful result needs a finite accuracy")
    return {
        "format": RESULT_FORMAT,
        **identity,
        "status": str(status),
        "accuracy": accuracy if status == Status.SUCCESS else None,
        "error": error,
        "hostname": socket.gethostname(),
        "device": device,
        "timestamp": _now(),
        "sample_indices": sample_indices,
        "timings": timings or {},
        "diagnostics": diagnostics or {},
        "worker_version": VERSION,
        "code_hash": code_hash,
    }


def validate_result(obj: Any, source: str, job: Job) -> dict[str, Any]:
    """Check a fetched result belongs to this job's run, trial and attempt, and holds what a result of
    its kind must. Returns it unchanged; raises ContractError naming the field otherwise."""
    if not isinstance(obj, dict):
        raise ContractError(source, "<root>", "a result file must hold a JSON object")
    if _get(source, obj, "format", int) != RESULT_FORMAT:
        raise ContractError(source, "format", f"unsupported result format {obj['format']}")
    for field, want in (("run_id", job.run_id), ("trial_id", job.trial_id), ("attempt", job.attempt)):
        got = obj.get(field)
        if got != want:
            raise ContractError(source, field, f"is {got!r}, expected {want!r} (a stale or foreign result)")
    status = _get(source, obj, "status", str)
    if status not in set(Status):
        raise ContractError(source, "status", f"{status!r} is not one of {tuple(map(str, Status))}")
    if status == Status.ERROR:
        _get(source, obj, "error", str)
    job.payload.check_result(obj, source, Status(status))
    return obj


def code_files(package_dir: Path) -> list[Path]:
    """The files that make up the worker's code: what is pushed to rigs and hashed."""
    return sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)


def code_hash(package_dir: Path | None = None) -> str:
    """sha256 over the worker package's relative paths and contents. The coordinator stamps it on
    every job; the worker refuses a job whose hash is not its own, so stale code cannot run."""
    package_dir = package_dir or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in code_files(package_dir):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
