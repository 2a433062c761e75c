"""Figure 2: the vectorised PRNG + features against a straightforward per-seed Python loop.

The reference below restates worker/scorer.py's features and worker/prng.py's java_lcg in plain Python
ints and loops, one seed at a time; the figure is refused unless both give the same features.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import figure
from worker.bench import HEAVIEST
from worker.params import random_params
from worker.prng import get_generator
from worker.scorer import SurvivorScorer
from worker.synth import write_synthetic

A, C, M, SHIFT = 0x5DEECE66D, 0xB, 2**48, 16  # java_lcg
MOD = 1000
SEEDS, REFERENCE_SEEDS, DRAWS = 450, 8, 4000  # the trial's sample and train history; the loop's share
# Corners the vectorised code treats specially: no lag searched, fewer windows fit than asked for,
# residue mods that do not divide the modulus.
EDGE = {**HEAVIEST, "max_offset": 0, "temporal_window_size": 200, "temporal_num_windows": 10,
        "residue_mod_1": 7, "residue_mod_2": 99, "residue_mod_3": 999}


def stream(seed: int, start: int, count: int, mod: int) -> list[int]:
    """Draws at positions start..start+count-1: s_0 = seed mod 2^48, s_t = (A s_{t-1} + C) mod 2^48,
    draw_t = (s_t >> 16) mod `mod`."""
    s = seed % M
    for _ in range(start - 1):
        s = (A * s + C) % M
    out = []
    for _ in range(count):
        s = (A * s + C) % M
        out.append((s >> SHIFT) % mod)
    return out


def chance(r: int, mod: int) -> float:
    """P(x = y mod r) for x, y uniform on [0, mod), by counting each residue class."""
    counts = [0] * r
    for x in range(mod):
        counts[x % r] += 1
    return sum(c * c for c in counts) / mod**2


def effect(rate: float, p: float) -> float:
    return (rate - p) / math.sqrt(p * (1 - p))


def reference_features(seed: int, draws: list[int], params: dict[str, Any], mod: int) -> list[float]:
    """SurvivorScorer.features of one seed for draws at positions 1..len(draws), written plainly."""
    n, max_offset = len(draws), params["max_offset"]
    s = stream(seed, 1, n + max_offset, mod)
    p = chance(mod, mod)

    def agreement(lag: int, r: int) -> float:
        return sum(1 for t in range(n) if s[t + lag] % r == draws[t] % r) / n

    residues = [effect(agreement(0, params[k]), chance(params[k], mod))
                for k in ("residue_mod_1", "residue_mod_2", "residue_mod_3")]
    lagged = max((agreement(lag, mod) for lag in range(1, max_offset + 1)), default=p)
    size = min(params["temporal_window_size"], n)
    count = min(params["temporal_num_windows"], n // size)
    first = n - count * size
    windows = [sum(1 for t in range(first + w * size, first + (w + 1) * size) if s[t] == draws[t]) / size
               for w in range(count)]
    confident = sum(1 for w in windows if (w - p) / (1 - p) >= params["min_confidence_threshold"]) / count
    return [effect(agreement(0, mod), p), *residues, effect(lagged, p), effect(sum(windows) / count, p),
            effect(windows[-1], p), confident]


def verify(seeds: np.ndarray, draws: np.ndarray) -> int:
    """Compare both implementations on every seed given, for several parameter sets and window lengths;
    returns how many feature rows agreed (raises on the first that does not)."""
    generator = get_generator("java_lcg")
    rng = np.random.default_rng(0)
    checked = 0
    for params in (HEAVIEST, EDGE, *(random_params(rng) for _ in range(3))):
        for n in (len(draws), 120):  # a short window: fewer draws than one temporal window
            fast = SurvivorScorer.features(seeds, draws[:n], 1, params, MOD, generator)
            slow = np.array([reference_features(int(seed), draws[:n].tolist(), params, MOD) for seed in seeds])
            if not np.allclose(fast, slow, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"vectorised features differ from the reference loop for {params}, n={n}")
            checked += len(seeds)
    return checked


def run(work: Path, repeats: int = 5) -> dict[str, Any]:
    """Seeds x draws per second of SurvivorScorer.features (vectorised java_lcg streams and features)
    on 450 seeds x 4,000 draws, against `reference_features` (plain Python ints and loops, one seed at a
    time) on 8 of the same seeds, both with worker.bench's heaviest parameters (max_offset 15: 4,015
    stream positions per seed). Each repeat times both back to back; the ratio is per repeat. Planted
    data (450 survivors), so seeds match draws and the equality check is not all zeros: before timing,
    both must agree (np.allclose) on 24 seeds for 5 parameter sets (heaviest, no lag with fewer
    windows than asked and non-dividing residue mods, 3 random) at 4,000 and 120 draws."""
    data = work / "planted"
    write_synthetic(data, "planted", n_survivors=SEEDS, n_train=DRAWS, n_holdout=1000, mod=MOD)
    seeds = np.load(data / "survivors.npz")["seeds"].astype(np.uint64)
    draws = np.array(json.loads((data / "train_history.json").read_text()), dtype=np.int64)
    checked = verify(seeds[:24], draws)
    generator = get_generator("java_lcg")
    ratios, fast_rates, slow_rates = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        SurvivorScorer.features(seeds, draws, 1, HEAVIEST, MOD, generator)
        fast_rates.append(len(seeds) * len(draws) / (time.perf_counter() - start))
        start = time.perf_counter()
        for seed in seeds[:REFERENCE_SEEDS]:
            reference_features(int(seed), draws.tolist(), HEAVIEST, MOD)
        slow_rates.append(REFERENCE_SEEDS * len(draws) / (time.perf_counter() - start))
        ratios.append(fast_rates[-1] / slow_rates[-1])
    return {"scoring_ratio": figure(ratios, "x", vectorised=figure(fast_rates, "seed-draws/s"),
                                    reference_loop=figure(slow_rates, "seed-draws/s"), rows_verified=checked)}
