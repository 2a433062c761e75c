"""A run's settings and the per-trial job files built from them: written once on the head
(`jobs/<study>/trial_NNNN.json`) and pushed to the rig that runs the attempt."""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.contract import ConfirmPayload, DataRef, Evaluation, Job, TrialPayload
from worker.files import write_json_atomic

OPTIMAL_CONFIG = "optimal_scorer_config.json"  # where Steps 3-6 read the optimum, unless told otherwise

# The estimate's design, chosen by measurement (docs/BENCHMARKS.md, chapter 3): ten networks, each
# trained on the proposal's 450 survivors and judged on 1,500 of its own (15,000 of the demo's 16,976).
DEFAULT_EVALUATION = Evaluation(replicates=10, eval_size=1500, nulls=200, objective="spearman_rho")
CONFIRM_TOP = 5  # the search's best trials that are evaluated again on fresh samples
CONFIRM_REPLICATES = 11  # networks per confirmation: as many as the demo's pool holds at 1,500 each


def confirm_evaluation(search: Evaluation, replicates: int = CONFIRM_REPLICATES) -> Evaluation:
    """A confirmation's design: the search's, with more replicates."""
    return dataclasses.replace(search, replicates=max(search.replicates, replicates))


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
    evaluation: Evaluation

    def job(self, number: int, params: dict[str, Any], attempt: int) -> Job:
        """Trial `number`'s job."""
        return self._job(TrialPayload, number, params, attempt, self.evaluation)

    def confirm_job(self, number: int, params: dict[str, Any], attempt: int, evaluation: Evaluation) -> Job:
        """Trial `number`'s confirmation: its parameters on fresh samples, with `evaluation`'s design."""
        return self._job(ConfirmPayload, number, params, attempt, evaluation)

    def _job(self, kind: type[TrialPayload], number: int, params: dict[str, Any], attempt: int,
             evaluation: Evaluation) -> Job:
        payload = kind(self.prng_type, self.mod, self.sample_size, dict(self.data),
                       {**params, "optuna_trial_number": number}, evaluation)
        return Job(study=self.study, run_id=self.run_id, trial_id=payload.task_id(), attempt=attempt,
                   timeout_s=self.timeout_s, code_hash=self.code_hash, payload=payload)

    def write(self, job: Job, root: Path = Path(".")) -> Path:
        """The head's copy of the job file, for the operator to read: the slot sends the rig the same text in
        its request. Not fsynced: the study holds everything it is made from, and nothing reads it back."""
        path = root / job.path
        write_json_atomic(path, job.to_dict(), durable=False)
        return path
