"""The trial's objectives: how well the network ranks survivors by their quality on unseen draws, and
what chance alone gives.

Spearman's rho (the default, as the proposal requires), not negative MSE: MSE on low-variance targets
rewards predicting the mean and gave every S101 trial the same value. A ranking that carries no
information (constant predictions or targets, or a NaN value) scores -1.0, the worst value, so the
optimiser never mistakes it for a result.

rho over a sample is nearly blind to its top, which is what Steps 3-6 use, so every trial also reports
a top-weighted figure: the mean holdout quality of the predicted top share (1%) over the sample's
mean, minus 1 (0: no better than a random pick). Either can be the value the study optimises.

Chance level: each figure's null distribution comes from the same predictions against the holdout
quality permuted (no retraining): under "no signal", predictions made from the train draws are
exchangeable with respect to the holdout quality, so the permutations are exactly what chance gives.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)
DEGENERATE = -1.0
TOP_SHARE = 0.01


def _degenerate(pred: np.ndarray, truth: np.ndarray) -> str | None:
    if np.std(pred) < 1e-12:
        return "predictions are constant"
    if np.std(truth) < 1e-12:
        return "holdout quality is constant"
    return None


@dataclass(frozen=True)
class Objective:
    """A figure of a ranking: its name in results, its range, its value and its permutation null."""

    name: str
    low: float
    high: float

    def out_of_range(self, value: float) -> str | None:
        """Why a reported value cannot be this objective's, or None when it can."""
        return None if self.low <= value <= self.high else f"{value} is outside the {self.name} range" \
                                                           f" [{self.low:g}, {self.high:g}]"

    def value(self, pred: np.ndarray, truth: np.ndarray) -> tuple[float, str | None]:
        """(value, why it is degenerate or None)."""
        reason = _degenerate(pred, truth)
        if reason is None:
            value = float(self._values(pred, truth[None, :])[0])
            if not math.isnan(value):
                return value, None
            reason = f"{self.name} is NaN"
        return DEGENERATE, reason

    def null(self, pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` values of the same predictions against permutations of the truth."""
        if _degenerate(pred, truth):
            return np.full(count, DEGENERATE)
        perms = rng.permuted(np.broadcast_to(truth, (count, len(truth))), axis=1)
        return np.nan_to_num(self._values(pred, perms), nan=DEGENERATE)

    def _values(self, pred: np.ndarray, truths: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), as Spearman's rho uses them."""
    from scipy.stats import rankdata  # scipy.stats costs ~1 s to import: not for the contract's range checks

    return rankdata(x, axis=-1)


class SpearmanRho(Objective):
    """scipy.stats.spearmanr for the value, as the proposal has it; its permutations vectorised."""

    def value(self, pred: np.ndarray, truth: np.ndarray) -> tuple[float, str | None]:
        rho, diagnostics = spearman_objective(pred, truth)
        return rho, diagnostics["reason"]

    def _values(self, pred: np.ndarray, truths: np.ndarray) -> np.ndarray:
        a = _ranks(pred)
        a = a - a.mean()
        b = _ranks(truths)
        b = b - b.mean(axis=1, keepdims=True)
        return (b @ a) / np.sqrt((a @ a) * np.einsum("ij,ij->i", b, b))


class TopLift(Objective):
    """Mean truth of the predicted top `share` over the mean truth, minus 1 (ties in the predictions are
    broken by position)."""

    share: float = TOP_SHARE

    def _values(self, pred: np.ndarray, truths: np.ndarray) -> np.ndarray:
        top = np.argsort(-pred, kind="stable")[:max(1, math.ceil(self.share * len(pred)))]
        mean = truths.mean(axis=1)
        return np.where(mean > 0, truths[:, top].mean(axis=1) / np.where(mean > 0, mean, 1) - 1, 0.0)


SPEARMAN = SpearmanRho("spearman_rho", -1.0, 1.0)
TOP = TopLift("top_lift", -1.0, 1 / TOP_SHARE - 1)
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (SPEARMAN, TOP)}


def out_of_range(value: float, objective: str = SPEARMAN.name) -> str | None:
    """Why a reported value cannot be the named objective's, or None when it can."""
    return OBJECTIVES[objective].out_of_range(value)


def spearman_objective(y_pred: np.ndarray, y_holdout: np.ndarray) -> tuple[float, dict[str, object]]:
    """(rho, diagnostics): rho of predictions against holdout quality, or -1.0 with the reason."""
    from scipy.stats import spearmanr

    y_pred, y_holdout = np.asarray(y_pred, dtype=float), np.asarray(y_holdout, dtype=float)
    reason = _degenerate(y_pred, y_holdout)
    if reason is None:
        rho, p_value = spearmanr(y_pred, y_holdout)
        if not math.isnan(rho):
            log.info("holdout Spearman rho %.6f (p=%.4g)", rho, p_value)
            return float(rho), {"rho": float(rho), "p_value": float(p_value), "reason": None}
        reason = "Spearman rho is NaN"
    log.warning("degenerate ranking: %s; rho = %s", reason, DEGENERATE)
    return DEGENERATE, {"rho": None, "p_value": None, "reason": reason}
