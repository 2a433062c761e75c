import json
import logging

import numpy as np
import pytest

from worker.objective import spearman_objective


def test_constant_predictions_score_minus_one_with_a_warning(caplog):
    """Proposal acceptance criterion 3."""
    with caplog.at_level(logging.WARNING, logger="worker.objective"):
        accuracy, diag = spearman_objective([0.002] * 450, [0.002] * 450)
    assert accuracy == -1.0
    assert diag["reason"] == "predictions are constant"
    assert "predictions are constant" in caplog.text


def test_constant_holdout_scores_minus_one():
    accuracy, diag = spearman_objective(np.arange(450.0), np.full(450, 0.001))
    assert (accuracy, diag["reason"]) == (-1.0, "holdout quality is constant")


def test_nan_rho_scores_minus_one():
    y_pred = np.arange(10.0)
    y_pred[3] = np.nan
    accuracy, diag = spearman_objective(y_pred, np.arange(10.0))
    assert (accuracy, diag["reason"]) == (-1.0, "Spearman rho is NaN")


@pytest.mark.parametrize(("direction", "expected"), [(1, 1.0), (-1, -1.0)])
def test_rho_measures_the_ranking_not_the_scale(direction, expected):
    y = np.random.default_rng(0).random(450) * 3.1e-5 + 0.0022  # S101's spread
    accuracy, diag = spearman_objective(direction * y * 1e6 + 7, y)
    assert accuracy == pytest.approx(expected)
    assert diag["reason"] is None and diag["p_value"] < 1e-10


def test_partial_ranking_and_json_safe_diagnostics():
    rng = np.random.default_rng(1)
    y = rng.random(450)
    accuracy, diag = spearman_objective(y + rng.normal(0, 0.3, 450), y)
    assert 0.5 < accuracy < 0.9
    for _, d in (spearman_objective(y, y), spearman_objective(y, np.ones(450))):
        json.dumps(d, allow_nan=False)
