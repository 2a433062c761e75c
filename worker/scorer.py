"""The survivor scorer: per-survivor evidence that its stream explains a window of draws.

The scorer reads aligned streams (worker/align.py: each survivor's output at the step that meets each
draw, and which draws carry evidence for it) and never a PRNG itself. Every feature is a rate over the
draws that carry evidence, normalised against chance, never a count, so its expectation does not depend
on how long the window is (the old scorer fed "number of predictions", 4,000 on train and 1,000 on
holdout, and saturated the network); a window without evidence reads as chance. Every scorer parameter
of the search space enters at least one feature. `quality`, the ground truth the network learns to
rank, reads no trial parameter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FEATURES = ("exact", "residue_1", "residue_2", "residue_3", "best_lag", "recent", "last_window",
            "confident_share")
RESIDUES = ("residue_mod_1", "residue_mod_2", "residue_mod_3")


def chance(r: int, mod: int) -> float:
    """P(x = y mod r) for x, y uniform on [0, mod): exactly 1/r only when r divides mod."""
    q, s = divmod(mod, r)
    return (s * (q + 1) ** 2 + (r - s) * q**2) / mod**2


def effect(rate: np.ndarray, p: float) -> np.ndarray:
    """Agreement beyond chance per draw in units of chance's per-draw s.d. (a z-score over sqrt(n)):
    0 for a survivor unrelated to the draws whatever the window's length."""
    return (rate - p) / math.sqrt(p * (1 - p))


def _rate(agree: np.ndarray, valid: np.ndarray | None, p: float) -> np.ndarray:
    """The share of agreements along the last axis among the draws that carry evidence (chance, p,
    where none does)."""
    if valid is None:
        return np.count_nonzero(agree, axis=-1) / agree.shape[-1]
    n = np.count_nonzero(valid, axis=-1)
    return np.where(n > 0, np.count_nonzero(agree & valid, axis=-1) / np.maximum(n, 1), p)


def _cut(valid: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if valid is None else valid[:, start:stop]


def features(stream: np.ndarray, valid: np.ndarray | None, draws: np.ndarray, params: dict[str, Any],
             mod: int) -> np.ndarray:
    """(n_survivors, len(FEATURES)) float32 for the draws, from streams aligned with them and
    `max_offset` draws beyond (stream[:, j] meets draws[j]).

    exact, residue_k: agreement of stream and draws (mod `mod`, mod residue_mod_k) over the window.
    best_lag: the best exact agreement of draw j with the stream `lag` draws later, lag 1..max_offset:
        evidence for a survivor that trails the generator by `lag` draws. With `exact` (lag 0) the
        network sees the best lag 0..max_offset and both pieces of evidence.
    recent, last_window: exact agreement over the most recent temporal_num_windows windows of
        temporal_window_size draws, and in the newest one alone.
    confident_share: the share of those windows whose agreement beyond chance, as a share of the
        window's draws, reaches min_confidence_threshold.
    """
    n = len(draws)
    max_offset = params["max_offset"]
    small = np.int32 if mod <= 2**31 else np.int64  # halves the memory traffic of the comparisons
    stream = stream[:, :n + max_offset].astype(small)
    draws = np.asarray(draws).astype(small)
    aligned, here = stream[:, :n], _cut(valid, 0, n)
    exact = aligned == draws
    p = chance(mod, mod)
    residues = [effect(_rate(aligned % params[k] == draws % params[k], here, chance(params[k], mod)),
                       chance(params[k], mod)) for k in RESIDUES]
    lags = [_rate(stream[:, lag:lag + n] == draws, _cut(valid, lag, lag + n), p) for lag in range(1, max_offset + 1)]
    lagged = np.max(lags, axis=0) if lags else np.full(len(stream), p)  # no lag searched: chance
    size = min(params["temporal_window_size"], n)  # a short window holds fewer or shorter windows
    count = min(params["temporal_num_windows"], n // size)
    shape = (len(exact), count, size)
    windows = _rate(exact[:, n - count * size:].reshape(shape),
                    None if here is None else here[:, n - count * size:].reshape(shape), p)
    confident = ((windows - p) / (1 - p) >= params["min_confidence_threshold"]).mean(axis=1)
    columns = [effect(_rate(exact, here, p), p), *residues, effect(lagged, p), effect(windows.mean(axis=1), p),
               effect(windows[:, -1], p), confident]
    return np.stack(columns, axis=1).astype(np.float32)


def quality(stream: np.ndarray, valid: np.ndarray | None, draws: np.ndarray, mod: int) -> np.ndarray:
    """Exact-match rate of each survivor's aligned stream with the draws (chance where no draw carries
    evidence)."""
    return _rate(stream[:, :len(draws)] == np.asarray(draws), _cut(valid, 0, len(draws)), chance(mod, mod))
