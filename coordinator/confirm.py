"""The confirmation phase: the search's best trials evaluated again on fresh samples.

A search's best value is the largest of many estimates, so it is biased upward (the luckiest sample
wins). When the search ends, its `top` best trials are evaluated again, each on samples seeded apart
from every trial's (worker/contract.ConfirmPayload) and with more replicates, through the same slots
and retries; the optimum is the best confirmed value, with its 95% interval (Student's t over the
replicates), beside the search's own best value. Each candidate's confirmation is recorded in the
study's attribute "confirmations" (a finished trial's own attributes cannot change), so a resume
confirms only what is missing and collects an attempt that finished while no coordinator listened, as
the trials' resume does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from coordinator.events import Event, EventKind, Watcher
from coordinator.inventory import Rig
from coordinator.outcome import Failure, Outcome, Reason
from coordinator.resume import fetch_earlier
from coordinator.scheduler import Task
from coordinator.settings import RunSettings, TrialSpec
from coordinator.study import Study, TrialRecord, TrialState
from coordinator.transport import Transport
from worker import contract
from worker.contract import Evaluation, Job

if TYPE_CHECKING:
    from coordinator.results import Archive


def interval(value: float, se: float | None, replicates: int) -> tuple[float, float] | None:
    """The 95% interval of a mean of `replicates` values with standard error `se` (Student's t)."""
    if se is None or replicates < 2:
        return None
    from scipy.stats import t as student

    half = float(student.ppf(0.975, replicates - 1)) * se
    return value - half, value + half


def confirmed_of(record: dict[str, Any], objective: str) -> dict[str, Any]:
    """What the study keeps of a confirmation: the value, its spread and interval, its chance level."""
    figure = record["diagnostics"]["figures"][objective]
    bounds = interval(figure["value"], figure["se"], len(figure["replicates"]))
    return {"value": figure["value"], "se": figure["se"], "replicates": len(figure["replicates"]),
            "interval": None if bounds is None else list(bounds), "p_normal": figure["p_normal"],
            "run_id": record["run_id"], "attempt": record["attempt"]}


def candidates(study: Study, top: int) -> list[TrialRecord]:
    """The search's `top` best complete trials, best first (the earlier on ties)."""
    done = [t for t in study.trials() if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(done, key=lambda t: (-t.value, t.number))[:top]


@dataclass(frozen=True)
class Optimum:
    """The best confirmed trial and what the search said of it and of its own best."""

    trial: TrialRecord
    confirmed: dict[str, Any]
    search_best: TrialRecord

    def to_dict(self) -> dict[str, Any]:
        return {"trial_number": self.trial.number, "value": self.confirmed["value"], "se": self.confirmed["se"],
                "interval_95": self.confirmed["interval"], "replicates": self.confirmed["replicates"],
                "search_value": self.trial.value,
                "search_best": {"trial_number": self.search_best.number, "value": self.search_best.value}}


def records(study: Study) -> dict[str, dict[str, Any]]:
    """Each candidate's confirmation state, by trial number (a string: the study's attributes are JSON)."""
    return study.meta().get("confirmations", {})


def optimum(study: Study, top: int) -> Optimum | None:
    """The candidate with the best confirmed value; None while none is confirmed."""
    cands, state = candidates(study, top), records(study)
    done = [(t, state[str(t.number)]["confirmed"]) for t in cands if state.get(str(t.number), {}).get("confirmed")]
    if not done:
        return None
    best, confirmed = max(done, key=lambda pair: (pair[1]["value"], -pair[0].number))
    return Optimum(best, confirmed, cands[0])


class ConfirmSource:
    """The confirmation phase as a Source of the scheduler: one task per candidate not yet confirmed."""

    def __init__(self, study: Study, settings: RunSettings, archive: Archive, top: int,
                 evaluation: Evaluation, transports: dict[str, Transport], watcher: Watcher, out: TextIO):
        self.study, self.settings, self.archive, self.top = study, settings, archive, top
        self.evaluation, self.transports, self.watcher, self.out = evaluation, transports, watcher, out
        self.pending: list[Task[TrialSpec]] = []

    def job(self, number: int, params: dict[str, Any], attempt: int) -> Job:
        return self.settings.confirm_job(number, params, attempt, self.evaluation)

    def begin(self) -> bool:
        """The phase's tasks: each candidate without a confirmation, after collecting the attempt an
        earlier coordinator left running; False when there is nothing to confirm."""
        state = records(self.study)
        for trial in candidates(self.study, self.top):
            known = state.get(str(trial.number), {})
            if "confirmed" in known or "failed" in known:
                continue
            spec = TrialSpec(trial.number, dict(trial.params))
            dispatch = known.get("dispatch") or {}
            failures = [Failure.from_dict(f) for f in known.get("failures", [])]
            if "attempt" in dispatch and dispatch["attempt"] not in {f.attempt for f in failures}:
                earlier = replace(self.job(trial.number, spec.params, dispatch["attempt"]), run_id=dispatch["run_id"])
                record = fetch_earlier(self.transports.get(dispatch["rig"]), earlier)
                if record is not None and record["status"] == contract.Status.SUCCESS:
                    self._record(trial.number, record)
                    print(f"resume: {record['trial_id']} re-attached from {dispatch['rig']}", file=self.out, flush=True)
                    continue
                failures.append(Failure(earlier.attempt, dispatch["rig"], Reason.INTERRUPTED,
                                        "the coordinator stopped during this attempt"))
                self._update(trial.number, failures=[f.to_dict() for f in failures])
                self.archive.store(record or contract.make_result(
                    earlier.identity(), accuracy=None, error="interrupted: the coordinator stopped during this attempt"
                                                             " (recorded by the coordinator on resume)"), final=False)
            attempt = dispatch.get("attempt", 0) + 1
            self.pending.append(Task(contract.confirm_id(trial.number), spec, attempt=attempt, first_attempt=attempt,
                                     failures=failures))
        if self.pending:
            self.watcher.notify(Event(EventKind.PHASE, value=len(self.pending), reason=(
                f"confirm: the search's best {len(self.pending)} trials again on fresh samples,"
                f" {self.evaluation.replicates} replicates each")))
        return bool(self.pending)

    def next_task(self) -> Task[TrialSpec] | None:
        return self.pending.pop(0) if self.pending else None

    def build(self, task: Task[TrialSpec], rig: Rig) -> Job:
        job = self.job(task.payload.number, task.payload.params, task.attempt)
        self.settings.write(job)
        self._update(task.payload.number, dispatch={"rig": rig.name, "run_id": job.run_id, "attempt": task.attempt})
        return job

    def _update(self, number: int, **fields: Any) -> None:
        """Merge fields into a candidate's confirmation state, on disk before anything refers to it."""
        state = records(self.study)
        self.study.set_meta("confirmations", {**state, str(number): {**state.get(str(number), {}), **fields}})

    def _record(self, number: int, record: dict[str, Any]) -> None:
        self.archive.store(record, final=True)
        self._update(number, confirmed=confirmed_of(record, self.evaluation.objective))

    def succeeded(self, task: Task[TrialSpec], outcome: Outcome, rig: Rig) -> None:
        self._record(task.payload.number, outcome.record)

    def attempt_failed(self, task: Task[TrialSpec], outcome: Outcome, rig: Rig | None, final: bool) -> None:
        spec = task.payload
        self.archive.store(outcome.record or contract.make_result(
            self.job(spec.number, spec.params, task.attempt).identity(), accuracy=None,
            error=f"{outcome.describe()} (recorded by the coordinator)"), final=final)
        self._update(spec.number, failures=[f.to_dict() for f in task.failures],
                     **({"failed": task.failure_text()} if final else {}))


def confirmed_share(value: float, interval_95: list[float] | None) -> str:
    """The confirmed value and its interval in words."""
    if interval_95 is None:
        return f"{value:.4f}"
    return f"{value:.4f} (95% interval {interval_95[0]:.4f} to {interval_95[1]:.4f})"

