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

from worker.prng.output import output_dtype

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


def _count(x: np.ndarray) -> np.ndarray:
    """True values along the last axis (a sum in int32: several times faster than count_nonzero's)."""
    return x.sum(axis=-1, dtype=np.int32)


def _rate(agree: np.ndarray, valid: np.ndarray | None, p: float) -> np.ndarray:
    """The share of agreements along the last axis among the draws that carry evidence (chance, p,
    where none does)."""
    if valid is None:
        return _count(agree) / agree.shape[-1]
    n = _count(valid)
    return np.where(n > 0, _count(agree & valid) / np.maximum(n, 1), p)


def _cut(valid: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if valid is None else valid[:, start:stop]


class _Windows:
    """Agreement counts over nested windows [0, end) of one set of draws, from one pass over the longest:
    each comparison is counted segment by segment between the ends, then accumulated."""

    def __init__(self, ends: tuple[int, ...], valid: np.ndarray | None):
        self.ends, self.valid = ends, valid
        self.cuts = [0, *ends[:-1]]
        self.judged = None if valid is None else self.sums(valid[:, :ends[-1]])

    def sums(self, x: np.ndarray) -> np.ndarray:
        """(rows, ends): true values of x (rows, ends[-1]) in each window (a sum per segment: about three
        times faster than np.add.reduceat's on booleans)."""
        segments = [_count(x[:, a:b]) for a, b in zip(self.cuts, self.ends, strict=True)]
        return np.cumsum(np.stack(segments, axis=1), axis=1, dtype=np.int32)

    def rates(self, agree: np.ndarray, p: float, lag: int = 0) -> np.ndarray:
        """(rows, ends): agreement rate per window among the draws with evidence (p where none has any)."""
        if self.valid is None:
            return self.sums(agree) / np.array(self.ends)
        judged = self.judged if lag == 0 else self.sums(self.valid[:, lag:lag + self.ends[-1]])
        return np.where(judged > 0, self.sums(agree & self.valid[:, lag:lag + self.ends[-1]]) / np.maximum(judged, 1),
                        p)


def features(stream: np.ndarray, valid: np.ndarray | None, draws: np.ndarray, params: dict[str, Any],
             mod: int) -> np.ndarray:
    """(n_survivors, len(FEATURES)) float32 for the draws, from streams aligned with them and
    `max_offset` draws beyond (stream[:, j] meets draws[j]). See `features_at`."""
    return features_at(stream, valid, draws, params, mod, (len(draws),))[0]


def features_at(stream: np.ndarray, valid: np.ndarray | None, draws: np.ndarray, params: dict[str, Any], mod: int,
                ends: tuple[int, ...]) -> list[np.ndarray]:
    """The features of the windows draws[:end] for each end (ascending), in one pass over the longest:
    a trial's fit window is a prefix of its evaluation window.

    exact, residue_k: agreement of stream and draws (mod `mod`, mod residue_mod_k) over the window.
    best_lag: the best exact agreement of draw j with the stream `lag` draws later, lag 1..max_offset:
        evidence for a survivor that trails the generator by `lag` draws. With `exact` (lag 0) the
        network sees the best lag 0..max_offset and both pieces of evidence.
    recent, last_window: exact agreement over the most recent temporal_num_windows windows of
        temporal_window_size draws, and in the newest one alone.
    confident_share: the share of those windows whose agreement beyond chance, as a share of the
        window's draws, reaches min_confidence_threshold.
    """
    n, max_offset = ends[-1], params["max_offset"]
    small = output_dtype(mod)  # what the families write: no copy
    stream = stream[:, :n + max_offset].astype(small, copy=False)
    draws = np.asarray(draws)[:n].astype(small)
    windows, here = _Windows(ends, _cut(valid, 0, n + max_offset)), _cut(valid, 0, n)
    exact = stream[:, :n] == draws
    p = chance(mod, mod)
    exact_rates = windows.rates(exact, p)
    residues = [effect(windows.rates(stream[:, :n] % params[k] == draws % params[k], chance(params[k], mod)),
                       chance(params[k], mod)) for k in RESIDUES]
    lags = [windows.rates(stream[:, lag:lag + n] == draws, p, lag) for lag in range(1, max_offset + 1)]
    lagged = np.max(lags, axis=0) if lags else np.full_like(exact_rates, p)  # no lag searched: chance
    out = []
    for i, end in enumerate(ends):
        size = min(params["temporal_window_size"], end)  # a short window holds fewer or shorter windows
        count = min(params["temporal_num_windows"], end // size)
        shape = (len(exact), count, size)
        recent = _rate(exact[:, end - count * size:end].reshape(shape),
                       None if here is None else here[:, end - count * size:end].reshape(shape), p)
        confident = ((recent - p) / (1 - p) >= params["min_confidence_threshold"]).mean(axis=1)
        columns = [effect(exact_rates[:, i], p), *(r[:, i] for r in residues), effect(lagged[:, i], p),
                   effect(recent.mean(axis=1), p), effect(recent[:, -1], p), confident]
        out.append(np.stack(columns, axis=1).astype(np.float32))
    return out


def quality(stream: np.ndarray, valid: np.ndarray | None, draws: np.ndarray, mod: int) -> np.ndarray:
    """Exact-match rate of each survivor's aligned stream with the draws (chance where no draw carries
    evidence)."""
    agree = stream[:, :len(draws)] == np.asarray(draws).astype(stream.dtype)
    return _rate(agree, _cut(valid, 0, len(draws)), chance(mod, mod))
