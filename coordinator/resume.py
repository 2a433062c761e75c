"""Resume policy: what a coordinator does with the trials an earlier one left RUNNING.

A trial whose attempt finished on its rig while no coordinator listened is collected from there
(its result is validated like any other). Any other is re-run with the same parameters and trial
number, under the next attempt number, and the attempt that was running is archived as failed, with
why: no attempt goes unrecorded, and no archived attempt is overwritten. Failures an earlier run
recorded (a trial it left unfinished when it stopped) stay in the trial's list.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TextIO

from coordinator import results
from coordinator.outcome import Failure, Reason
from coordinator.scheduler import Task
from coordinator.settings import RunSettings, TrialSpec
from coordinator.slots import ResultError, fetch_result
from coordinator.study import Study, TrialState
from coordinator.transport import Transport, TransportError
from worker import contract


def reattach(study: Study, transports: dict[str, Transport], archive: results.Archive, settings: RunSettings,
             out: TextIO) -> list[Task[TrialSpec]]:
    """Collect or requeue every RUNNING trial; returns the tasks to re-run, first."""
    pending = []
    for trial in study.trials():
        if trial.state != TrialState.RUNNING:
            continue
        spec = TrialSpec(trial.number, study.complete_params(trial.number))
        dispatch = trial.attrs.get("dispatch") or {}
        failures = [Failure.from_dict(f) for f in trial.attrs.get("failures", [])]
        known = dispatch.get("attempt") in {f.attempt for f in failures}  # it failed, and that is on record
        earlier = None if known else _earlier_job(settings, spec, dispatch)
        record = fetch_earlier(transports.get(dispatch.get("rig", "")), earlier)
        if record is not None and record["status"] == contract.Status.SUCCESS:
            archive.store(record, final=True)
            study.set_attrs(trial.number, rig=dispatch["rig"], reattached=True)
            study.tell_value(trial.number, float(record["accuracy"]))
            print(f"resume: {record['trial_id']} re-attached from {dispatch['rig']}: {record['accuracy']:.6f}",
                  file=out, flush=True)
            continue
        if earlier is not None:
            if record is not None:
                failure = Failure(earlier.attempt, dispatch["rig"], Reason.ERROR, record["error"])
            else:
                failure = Failure(earlier.attempt, dispatch["rig"], Reason.INTERRUPTED,
                                  f"the coordinator stopped during this attempt; no result on {dispatch['rig']}")
                record = contract.make_result(earlier.identity(), accuracy=None, error=f"{failure.reason}:"
                                              f" {failure.detail} (recorded by the coordinator on resume)")
            archive.store(record, final=False)
            failures.append(failure)
        attempt = max(trial.attrs.get("attempts", 0), dispatch.get("attempt", 0)) + 1  # never reuse one
        pending.append(Task(contract.trial_id(trial.number), spec, attempt=attempt, first_attempt=attempt,
                            failures=failures))
        print(f"resume: {contract.trial_id(trial.number)} will be re-run", file=out, flush=True)
    return pending


def _earlier_job(settings: RunSettings, spec: TrialSpec, dispatch: dict[str, Any]) -> contract.Job | None:
    """The job of the attempt an earlier coordinator dispatched, as that run built it."""
    if "attempt" not in dispatch:
        return None
    return replace(settings.job(spec.number, spec.params, dispatch["attempt"]), run_id=dispatch["run_id"])


def fetch_earlier(transport: Transport | None, job: contract.Job | None) -> dict | None:
    """An earlier attempt's valid result from its rig, or None (no rig, no job, nothing valid there)."""
    if transport is None or job is None:
        return None
    try:
        return fetch_result(transport, job)
    except (TransportError, ResultError):
        return None
