"""Run one job file and write its one result file, whatever happens.

Every outcome leaves a result where the coordinator looks for it (when the job's identity is
readable): a success with its accuracy, or an error naming the file, field and problem, with a
non-zero exit status: EXIT_REFUSED (2) when no attempt of the job could succeed here (bad input, stale
code, a missing dependency), EXIT_FAILED (1) when the trial itself crashed.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from worker import contract, protocol
from worker.files import write_json_atomic
from worker.protocol import EXIT_FAILED, EXIT_OK, EXIT_REFUSED

log = logging.getLogger(__name__)


def execute(job_file: str, root: Path, own_hash: str, cache: dict | None = None) -> tuple[dict | None, int]:
    """Run the job at `job_file` (relative to root). Returns (result or None, exit status)."""
    from worker.trial import run_trial  # the science's imports (torch) stay out of `worker --help`

    source = job_file
    try:
        job_path = contract.resolve_inside(root, contract.safe_relpath(source, "job", job_file))
        raw = contract.read_json(job_path)
    except contract.ContractError as exc:
        log.error("%s", exc)
        return None, EXIT_REFUSED
    try:
        job = contract.parse_job(raw, source)
    except contract.ContractError as exc:
        return _fail(root, contract.partial_identity(raw), str(exc), own_hash, EXIT_REFUSED)
    if job.code_hash != own_hash:
        return _fail(root, job.identity(), f"{source}: field 'code_hash': stale code: the job was built for"
                     f" {job.code_hash[:12]}, this worker is {own_hash[:12]}; redeploy", own_hash,
                     EXIT_REFUSED)
    try:
        outcome = run_trial(job, root, cache)
    except contract.ContractError as exc:
        return _fail(root, job.identity(), str(exc), own_hash, EXIT_REFUSED)
    except ImportError as exc:  # a dependency missing on this rig: every trial here would fail the same way
        log.error("trial could not import:\n%s", traceback.format_exc())
        return _fail(root, job.identity(), f"{type(exc).__name__}: {exc} (missing on this rig's python)", own_hash,
                     EXIT_REFUSED)
    except Exception as exc:  # a crash is reported as an error result, never as a value
        log.error("trial crashed:\n%s", traceback.format_exc())
        return _fail(root, job.identity(), f"{type(exc).__name__}: {exc}", own_hash, EXIT_FAILED)
    result = contract.make_result(
        job.identity(), accuracy=outcome.accuracy, error=None, device=outcome.device,
        sample_indices=outcome.sample_indices, timings=outcome.timings,
        diagnostics=outcome.diagnostics, code_hash=own_hash)
    write_json_atomic(contract.resolve_inside(root, job.result_path), result)
    log.info("%s attempt %d: accuracy %.6f", job.trial_id, job.attempt, outcome.accuracy)
    return result, EXIT_OK


def _fail(root: Path, identity: dict[str, Any] | None, error: str, own_hash: str,
          status: int) -> tuple[dict | None, int]:
    log.error("%s", error)
    if identity is None:
        return None, status
    result = contract.make_result(identity, accuracy=None, error=error, code_hash=own_hash)
    path = protocol.result_path(identity["study"], identity["run_id"], identity["trial_id"], identity["attempt"])
    write_json_atomic(contract.resolve_inside(root, path), result)
    return result, status
