"""A run's settings and the per-trial job files built from them: written once on the head
(`jobs/<study>/trial_NNNN.json`) and pushed to the rig that runs the attempt."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import contract
from worker.contract import DataRef, Job, TrialPayload
from worker.files import write_json_atomic

OPTIMAL_CONFIG = "optimal_scorer_config.json"  # where Steps 3-6 read the optimum, unless told otherwise


def new_run_id() -> str:
    """Unique per coordinator run: result files are scoped by it, so stale ones never match."""
    return time.strftime("r%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class TrialSpec:
    """A Step 2 task's payload: the trial's number and parameters, the same for every attempt."""

    number: int
    params: dict[str, Any]


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
        payload = TrialPayload(self.prng_type, self.mod, self.sample_size, dict(self.data),
                               {**params, "optuna_trial_number": number})
        return Job(study=self.study, run_id=self.run_id, trial_id=contract.trial_id(number), attempt=attempt,
                   timeout_s=self.timeout_s, code_hash=self.code_hash, payload=payload)

    def write(self, job: Job, root: Path = Path(".")) -> Path:
        """The head's copy of the job file (also what is pushed to the rig)."""
        path = root / job.path
        write_json_atomic(path, job.to_dict())
        return path
