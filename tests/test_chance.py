"""The study's verdict: its best value against chance for the best of N trials, calibrated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coordinator.chance import ALPHA, best_of, verdict
from coordinator.study import TrialRecord, TrialState


def trials_from(values, means, sds, objective="spearman_rho"):
    return [TrialRecord(i, TrialState.COMPLETE, v, {}, {"figures": {objective: {"value": v, "null_mean": m,
                                                                               "null_sd": s}}})
            for i, (v, m, s) in enumerate(zip(values, means, sds, strict=True))]


def test_the_corrected_p_value_is_calibrated_on_chance_alone():
    """Studies whose every value is drawn from its own null: 'signal' about ALPHA of the time."""
    rng = np.random.default_rng(0)
    p = []
    for _ in range(2000):
        means, sds = rng.normal(0, 0.01, 30), rng.uniform(0.02, 0.06, 30)
        p.append(best_of(list(zip(range(30), rng.normal(means, sds), means, sds, strict=True)), "x").p_value)
    p = np.array(p)
    assert abs(np.mean(p < ALPHA) - ALPHA) < 0.01 and abs(np.mean(p < 0.5) - 0.5) < 0.05


def test_a_best_far_above_every_null_is_signal_in_words():
    trials = trials_from([0.05, 0.3, 0.1], [0.0, 0.0, 0.01], [0.03, 0.03, 0.03])
    v = verdict(trials, "spearman_rho")
    assert v.signal and v.trial == 1 and v.best == 0.3 and v.p_value < 1e-10
    assert v.words().startswith("signal (p = ") and "best of 3 trials" in v.words()


def test_a_best_chance_explains_says_so():
    trials = trials_from([0.05, 0.06, 0.04], [0.0, 0.0, 0.0], [0.03, 0.03, 0.03])
    v = verdict(trials, "spearman_rho")
    below = 1 - 0.5 * math.erfc(2 / math.sqrt(2))  # each null's P(value < 0.06): 2 s.d. below it
    assert not v.signal and v.p_value == pytest.approx(1 - below**3)
    assert v.words().startswith("no evidence of signal: the best (0.0600) is what chance gives for 3 trials")


def test_only_complete_trials_with_a_chance_level_count():
    trials = trials_from([0.2, 0.1], [0.0, 0.0], [0.03, 0.03])
    trials.append(TrialRecord(2, TrialState.FAIL, None, {}, {}))
    trials.append(TrialRecord(3, TrialState.COMPLETE, 0.9, {}, {}))  # an older record: no chance level
    v = verdict(trials, "spearman_rho")
    assert v.trials == 2 and v.best == 0.2
    assert verdict([], "spearman_rho").words().startswith("no chance level")
