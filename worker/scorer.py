"""SurvivorScorer: per-seed evidence that a seed's stream explains a window of draws.

Every feature is a rate normalised against chance, never a count, so its expectation does not
depend on how long the window is (the old scorer fed "number of predictions", 4,000 on train and
1,000 on holdout, and saturated the network). Every scorer parameter of the search space enters at
least one feature. `quality`, the ground truth the network learns to rank, reads no trial parameter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from worker.prng import Generator

FEATURES = ("exact", "residue_1", "residue_2", "residue_3", "best_lag", "recent", "last_window",
            "confident_share")
RESIDUES = ("residue_mod_1", "residue_mod_2", "residue_mod_3")


def chance(r: int, mod: int) -> float:
    """P(x = y mod r) for x, y uniform on [0, mod): exactly 1/r only when r divides mod."""
    q, s = divmod(mod, r)
    return (s * (q + 1) ** 2 + (r - s) * q**2) / mod**2


def effect(rate: np.ndarray, p: float) -> np.ndarray:
    """Agreement beyond chance per draw in units of chance's per-draw s.d. (a z-score over sqrt(n)):
    0 for a seed unrelated to the draws whatever the window's length."""
    return (rate - p) / math.sqrt(p * (1 - p))


def _rate(agree: np.ndarray) -> np.ndarray:
    return np.count_nonzero(agree, axis=-1) / agree.shape[-1]


class SurvivorScorer:
    """Stateless: the seeds, draws, parameters and generator are arguments, so one scorer serves
    every trial of a warm worker."""

    @staticmethod
    def features(seeds: np.ndarray, draws: np.ndarray, start_pos: int, params: dict[str, Any], mod: int,
                 generator: Generator) -> np.ndarray:
        """(n_seeds, len(FEATURES)) float32 for draws at stream positions start_pos, start_pos+1, ...

        exact, residue_k: agreement of stream and draws (mod `mod`, mod residue_mod_k) over the window.
        best_lag: the best exact agreement of draw t with stream position t + lag, lag 1..max_offset:
            evidence for a survivor that trails the generating seed by `lag` steps. With `exact`
            (lag 0) the network sees the best lag 0..max_offset and both pieces of evidence.
        recent, last_window: exact agreement over the most recent temporal_num_windows windows of
            temporal_window_size draws, and in the newest one alone.
        confident_share: the share of those windows whose agreement beyond chance, as a share of the
            window's draws, reaches min_confidence_threshold.
        """
        n = len(draws)
        max_offset = params["max_offset"]
        small = np.int32 if mod <= 2**31 else np.int64  # halves the memory traffic of the comparisons
        stream = generator.draws(seeds, start_pos, n + max_offset, mod).astype(small)
        draws = np.asarray(draws).astype(small)
        aligned = stream[:, :n]
        exact = aligned == draws
        p = chance(mod, mod)
        rate = _rate(exact)
        residues = [effect(_rate(aligned % params[k] == draws % params[k]), chance(params[k], mod))
                    for k in RESIDUES]
        lags = [_rate(stream[:, lag:lag + n] == draws) for lag in range(1, max_offset + 1)]
        lagged = np.max(lags, axis=0) if lags else np.full(len(seeds), p)  # no lag searched: chance
        size = min(params["temporal_window_size"], n)  # a short window holds fewer or shorter windows
        count = min(params["temporal_num_windows"], n // size)
        windows = _rate(exact[:, n - count * size:].reshape(len(exact), count, size))
        confident = ((windows - p) / (1 - p) >= params["min_confidence_threshold"]).mean(axis=1)
        columns = [effect(rate, p), *residues, effect(lagged, p), effect(windows.mean(axis=1), p),
                   effect(windows[:, -1], p), confident]
        return np.stack(columns, axis=1).astype(np.float32)

    @staticmethod
    def quality(seeds: np.ndarray, draws: np.ndarray, start_pos: int, mod: int,
                generator: Generator) -> np.ndarray:
        """Exact-match rate of each seed's stream with the draws at their true positions."""
        return _rate(generator.draws(seeds, start_pos, len(draws), mod) == np.asarray(draws))
