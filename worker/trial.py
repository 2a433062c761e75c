"""One Step 2 trial: sample survivors, learn to predict their future quality, score the ranking.

The fit mirrors the evaluation one step earlier in time: features on the older train draws predict
quality on the newest train draws (as many as the holdout), exactly as features on the whole train
history then predict quality on the holdout, whose stream positions continue after the train draws.
Features and target never share draws, and the target reads no trial parameter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker import model
from worker.align import choose_skips, stream
from worker.contract import Job
from worker.data import load_dataset
from worker.objective import spearman_objective
from worker.params import validate_params
from worker.prng import get_generator
from worker.scorer import features, quality


@dataclass
class TrialOutcome:
    accuracy: float
    sample_indices: list[int]
    timings: dict[str, float]  # seconds per phase: load, features, fit, holdout, objective
    device: str
    diagnostics: dict[str, Any]


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[phase] = time.perf_counter() - start


def _summary(y: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(y)), "std": float(np.std(y)), "max": float(np.max(y))}


def run_trial(job: Job, root: Path, cache: dict | None = None) -> TrialOutcome:
    """Run the job's trial on data under root. The trial number seeds the sample, the validation
    split and the network, so running the same job twice gives the same accuracy."""
    source, trial = job.path, job.payload
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        params = validate_params(trial.params, source)
        get_generator(trial.prng_type, source)
        data = load_dataset(trial, root, cache)
        rng = np.random.default_rng(trial.trial_number)
        indices = np.sort(rng.choice(len(data.survivors), size=trial.sample_size, replace=False))
        survivors = data.survivors.take(indices)
    n_train, n_holdout = len(data.train), len(data.holdout)
    n_old = n_train - n_holdout
    with _timed(timings, "features"):
        skips = choose_skips(survivors, data.train[:n_old], 0, trial.mod)
        values, valid = stream(survivors, skips, 0, n_train + max(params["max_offset"], n_holdout), trial.mod)
        x_fit = features(values, valid, data.train[:n_old], params, trial.mod)
        y_fit = quality(values[:, n_old:], _after(valid, n_old), data.train[n_old:], trial.mod)
    with _timed(timings, "fit"):
        fitted = model.fit(x_fit, y_fit, params, seed=trial.trial_number)
    with _timed(timings, "holdout"):
        y_pred = fitted.predict(features(values, valid, data.train, params, trial.mod))
        y_holdout = quality(values[:, n_train:], _after(valid, n_train), data.holdout, trial.mod)
    with _timed(timings, "objective"):
        accuracy, objective = spearman_objective(y_pred, y_holdout)
    chosen = dict(zip(*(a.tolist() for a in np.unique(skips, return_counts=True)), strict=True))
    diagnostics = {**objective, **fitted.diagnostics, "pool": len(data.survivors), "n_train": n_train,
                   "n_holdout": n_holdout, "y_fit": _summary(y_fit), "y_holdout": _summary(y_holdout),
                   "y_pred": _summary(y_pred), "skips": {str(k): n for k, n in chosen.items()},
                   "hybrid": int(survivors.hybrid.sum()), "reverse": int(survivors.reverse.sum())}
    return TrialOutcome(accuracy, indices.tolist(), timings, "cpu", diagnostics)


def _after(valid: np.ndarray | None, start: int) -> np.ndarray | None:
    return None if valid is None else valid[:, start:]
