"""A trial's figure as an estimate: its value, standard error and chance level.

The value is the mean of the figure over the trial's independent replicates (each a network trained
on its own sample and judged on its own survivors), so its standard error is their s.d. over the root
of their number. The chance level is the same mean over the replicates' permutation nulls (the same
predictions against permuted holdout quality, index by index across replicates): its empirical p-value
counts the nulls at or above the value, and a normal approximation from their mean and s.d. resolves
p-values far below one over their number, which a study's correction for its best of N trials needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from worker.objective import Objective

NULL_DIGITS = 5  # null values kept in results: enough for their distribution, a few KB per trial


@dataclass(frozen=True)
class Figure:
    value: float
    se: float | None  # None with one replicate: one value says nothing of its own spread
    replicates: list[float]
    reasons: list[str]  # degenerate replicates' reasons (each scored the worst value)
    null_mean: float | None
    null_sd: float | None
    p_value: float | None  # empirical: (1 + nulls >= value) / (1 + nulls)
    p_normal: float | None  # from the nulls' mean and s.d.
    null: list[float]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def estimate(objective: Objective, preds: list[np.ndarray], truths: list[np.ndarray], rng: np.random.Generator,
             nulls: int) -> Figure:
    """The objective over the replicates, with `nulls` permutations of each for its chance level."""
    scored = [objective.value(p, t) for p, t in zip(preds, truths, strict=True)]
    values = [v for v, _ in scored]
    value = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    reasons = [why for _, why in scored if why]
    if nulls == 0:
        return Figure(value, se, values, reasons, None, None, None, None, [])
    null = np.mean([objective.null(p, t, rng, nulls) for p, t in zip(preds, truths, strict=True)], axis=0)
    mean, sd = float(null.mean()), float(null.std(ddof=1)) if nulls > 1 else 0.0
    p_normal = 0.5 * math.erfc((value - mean) / (sd * math.sqrt(2))) if sd > 0 else float(value <= mean)
    return Figure(value, se, values, reasons, mean, sd, (1 + int(np.sum(null >= value))) / (1 + nulls), p_normal,
                  np.round(null, NULL_DIGITS).tolist())
