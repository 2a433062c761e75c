"""Whether a study found anything: its best value against what chance gives for the best of N trials.

Every trial carries its own chance level, the mean and s.d. of its value's permutation null (the same
predictions against permuted holdout quality; worker/estimate.py). Under "no signal" trial i's value is
drawn from its null, so the best of the N complete trials is at least v with probability
1 - prod_i P(null_i < v) (a normal approximation per trial; trials that share survivors are positively
dependent, which only makes the best less extreme: the p-value is conservative). A study says
"signal" when that corrected p-value is below ALPHA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordinator.study import TrialRecord

ALPHA = 0.01


@dataclass(frozen=True)
class Verdict:
    objective: str
    best: float | None  # the best value of the trials with a chance level
    trial: int | None
    trials: int  # complete trials with a chance level
    p_value: float | None  # corrected for taking the best of `trials`
    alpha: float = ALPHA

    @property
    def signal(self) -> bool:
        return self.p_value is not None and self.p_value < self.alpha

    def words(self) -> str:
        if self.p_value is None:
            return f"no chance level: no complete trial reports one for {self.objective}"
        if self.signal:
            return f"signal (p = {self.p_value:.2g} for the best of {self.trials} trials)"
        return (f"no evidence of signal: the best ({self.best:.4f}) is what chance gives for {self.trials} trials"
                f" (p = {self.p_value:.2g})")

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "best": self.best, "trial": self.trial, "trials": self.trials,
                "p_value": self.p_value, "alpha": self.alpha, "signal": self.signal, "words": self.words()}


def _upper(z: float) -> float:
    """P(Z >= z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def best_of(values: list[tuple[int, float, float, float]], objective: str) -> Verdict:
    """Verdict over (trial, value, null mean, null sd) of each complete trial."""
    if not values:
        return Verdict(objective, None, None, 0, None)
    trial, best, _, _ = max(values, key=lambda v: (v[1], -v[0]))
    log_below = 0.0  # log prod_i P(null_i < best)
    for _, _, mean, sd in values:
        above = _upper((best - mean) / sd) if sd > 0 else float(best <= mean)
        if above >= 1.0:
            return Verdict(objective, best, trial, len(values), 1.0)
        log_below += math.log1p(-above)
    return Verdict(objective, best, trial, len(values), -math.expm1(log_below))


def verdict(trials: list[TrialRecord], objective: str) -> Verdict:
    """The study's verdict for one figure, from the chance levels its complete trials recorded."""
    values = []
    for t in trials:
        figure = (t.attrs.get("figures") or {}).get(objective)
        if t.state == "COMPLETE" and figure and figure.get("null_sd") is not None:  # TrialState.COMPLETE
            values.append((t.number, figure["value"], figure["null_mean"], figure["null_sd"]))
    return best_of(values, objective)
