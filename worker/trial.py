"""One Step 2 trial: sample survivors, learn to predict their future quality, score the ranking.

A trial's value is an estimate over independent replicates (worker/estimate.py): each trains its
network on its own sample of `sample_size` survivors and is judged on `eval_size` survivors (its
sample and others no other replicate sees), all drawn by the trial's own seed.

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
from worker.estimate import estimate
from worker.objective import OBJECTIVES
from worker.params import validate_params
from worker.prng import get_generator
from worker.scorer import features_at, quality


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
    """Run the job's trial on data under root. Its seed (the trial number) draws the replicates'
    survivors, and seeds the networks and the nulls, so running the same job twice gives the same value."""
    source, trial = job.path, job.payload
    ev = trial.evaluation
    timings = dict.fromkeys(("load", "features", "fit", "holdout", "objective"), 0.0)
    with _timed(timings, "load"):
        params = validate_params(trial.params, source)
        get_generator(trial.prng_type, source)
        data = load_dataset(trial, root, cache)
        pool = len(data.survivors)
        rng = np.random.default_rng(trial.seed)
        blocks = rng.choice(pool, size=ev.replicates * ev.eval_size, replace=False).reshape(ev.replicates,
                                                                                              ev.eval_size)
        rows = np.sort(blocks, axis=None)
        survivors = data.survivors.take(rows)
    n_train, n_holdout = len(data.train), len(data.holdout)
    n_old = n_train - n_holdout
    with _timed(timings, "features"):
        skips = choose_skips(survivors, data.train[:n_old], 0, trial.mod)
        values, valid = stream(survivors, skips, 0, n_train + max(params["max_offset"], n_holdout), trial.mod)
        x_fit, x_eval = features_at(values, valid, data.train, params, trial.mod, (n_old, n_train))
        y_fit = quality(values[:, n_old:], _after(valid, n_old), data.train[n_old:], trial.mod)
        y_holdout = quality(values[:, n_train:], _after(valid, n_train), data.holdout, trial.mod)
    trains = [np.searchsorted(rows, np.sort(block[:trial.sample_size])) for block in blocks]
    judged = [np.searchsorted(rows, np.sort(block)) for block in blocks]
    with _timed(timings, "fit"):
        fitted = model.fit([x_fit[t] for t in trains], [y_fit[t] for t in trains], params,
                           [trial.net_seed(k) for k in range(ev.replicates)])
    with _timed(timings, "holdout"):
        preds = [fitted.predict(k, x_eval[judge]) for k, judge in enumerate(judged)]
    truths = [y_holdout[judge] for judge in judged]
    with _timed(timings, "objective"):
        null_rng = np.random.default_rng([*trial.seed, NULL_STREAM])
        figures = {name: estimate(obj, preds, truths, null_rng, ev.nulls) for name, obj in OBJECTIVES.items()}
    chosen = dict(zip(*(a.tolist() for a in np.unique(skips, return_counts=True)), strict=True))
    diagnostics = {"objective": ev.objective, "figures": {name: f.to_dict() for name, f in figures.items()},
                   "reason": next(iter(figures[ev.objective].reasons), None), "fits": fitted.diagnostics,
                   "top": [_top(rows[judge], data.survivors.seeds, pred, truth)
                           for judge, pred, truth in zip(judged, preds, truths, strict=True)],
                   "ranked": [rows[judge][np.argsort(-pred, kind="stable")].tolist()
                              for judge, pred in zip(judged, preds, strict=True)],
                   "pool": pool, "n_train": n_train, "n_holdout": n_holdout, "y_fit": _summary(y_fit),
                   "y_holdout": _summary(y_holdout), "y_pred": _summary(np.concatenate(preds)),
                   "skips": {str(k): n for k, n in chosen.items()}, "hybrid": int(survivors.hybrid.sum()),
                   "reverse": int(survivors.reverse.sum())}
    return TrialOutcome(figures[ev.objective].value, rows.tolist(), timings, "cpu", diagnostics)


NULL_STREAM = 0x5EED_0F_0  # the nulls' own random stream beside the samples'
TOP = 10  # survivors recorded from the top of each replicate's ranking


def _top(rows: np.ndarray, seeds: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    """The replicate's survivors ranked highest: pool index, seed, predicted and holdout quality."""
    return [{"index": int(rows[i]), "seed": int(seeds[rows[i]]), "predicted": float(pred[i]),
             "holdout": float(truth[i])} for i in np.argsort(-pred, kind="stable")[:TOP]]


def _after(valid: np.ndarray | None, start: int) -> np.ndarray | None:
    return None if valid is None else valid[:, start:]
