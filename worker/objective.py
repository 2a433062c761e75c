"""The trial's objective: how well the network ranks survivors by their quality on unseen draws.

Spearman's rho, not negative MSE: MSE on low-variance targets rewards predicting the mean and gave
every S101 trial the same value. A ranking that carries no information (constant predictions or
targets, or a NaN rho) scores -1.0, the worst value, so the optimiser never mistakes it for a result.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
DEGENERATE = -1.0
LOW, HIGH = -1.0, 1.0  # the range of Spearman's rho: a value outside it is not a result


def out_of_range(value: float) -> str | None:
    """Why a reported value cannot be this objective's, or None when it can."""
    return None if LOW <= value <= HIGH else f"{value} is outside the Spearman range [{LOW:g}, {HIGH:g}]"


def spearman_objective(y_pred: np.ndarray, y_holdout: np.ndarray) -> tuple[float, dict[str, Any]]:
    """(accuracy, diagnostics): rho of predictions against holdout quality, or -1.0 with the reason."""
    from scipy.stats import spearmanr  # ~1 s to import: not for the coordinator's range checks

    y_pred, y_holdout = np.asarray(y_pred, dtype=float), np.asarray(y_holdout, dtype=float)
    if np.std(y_pred) < 1e-12:
        reason = "predictions are constant"
    elif np.std(y_holdout) < 1e-12:
        reason = "holdout quality is constant"
    else:
        rho, p_value = spearmanr(y_pred, y_holdout)
        if not math.isnan(rho):
            log.info("holdout Spearman rho %.6f (p=%.4g)", rho, p_value)
            return float(rho), {"rho": float(rho), "p_value": float(p_value), "reason": None}
        reason = "Spearman rho is NaN"
    log.warning("degenerate ranking: %s; rho = %s", reason, DEGENERATE)
    return DEGENERATE, {"rho": None, "p_value": None, "reason": reason}
