"""Figure 2: the vectorised aligned streams + features against a straightforward per-survivor Python loop.

The reference (tests/reference.py) restates worker/prng's java_lcg, worker/align.py's sieve alignment
and worker/scorer.py's features in plain Python ints and loops, one survivor at a time; the figure is
refused unless both give the same features.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import demo_folders
from benchmarks.report import figure
from tests import reference
from worker.align import stream
from worker.bench import HEAVIEST
from worker.params import random_params
from worker.scorer import features
from worker.survivors import Survivors

MOD = 1000
SEEDS, REFERENCE_SEEDS, DRAWS = 450, 8, 4000  # the trial's sample and train history; the loop's share
# Corners the vectorised code treats specially: no lag searched, fewer windows fit than asked for,
# residue mods that do not divide the modulus.
EDGE = {**HEAVIEST, "max_offset": 0, "temporal_window_size": 200, "temporal_num_windows": 10,
        "residue_mod_1": 7, "residue_mod_2": 99, "residue_mod_3": 999}


def aligned(seeds: np.ndarray, rng: np.random.Generator) -> tuple[Survivors, np.ndarray]:
    """The seeds as Step 1 survivors of java_lcg: half reverse, offsets 0..500, skips 0..3."""
    n = len(seeds)
    skips = rng.integers(0, 4, n)
    return Survivors(seeds, np.zeros(n, np.uint8), ("java_lcg",), rng.random(n) < 0.5, rng.integers(0, 500, n),
                     skips, skips, np.zeros(n, bool), rng.integers(50, 300, n)), skips


def vectorised(survivors: Survivors, skips: np.ndarray, draws: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    return features(*stream(survivors, skips, 0, len(draws) + params["max_offset"], MOD), draws, params, MOD)


def plain(survivors: Survivors, skips: np.ndarray, i: int, draws: list[int], params: dict[str, Any]) -> list[float]:
    values, valid = reference.aligned_stream("java_lcg", int(survivors.seeds[i]), int(survivors.offset[i]),
                                             int(skips[i]), bool(survivors.reverse[i]), int(survivors.window[i]), 0,
                                             len(draws) + params["max_offset"], MOD)
    return reference.features(values, valid, draws, params, MOD)


def verify(survivors: Survivors, skips: np.ndarray, draws: np.ndarray) -> int:
    """Compare both implementations on every survivor given, for several parameter sets and window lengths;
    returns how many feature rows agreed (raises on the first that does not)."""
    rng = np.random.default_rng(0)
    checked = 0
    for params in (HEAVIEST, EDGE, *(random_params(rng) for _ in range(3))):
        for n in (len(draws), 120):  # a short window: fewer draws than one temporal window
            fast = vectorised(survivors, skips, draws[:n], params)
            slow = np.array([plain(survivors, skips, i, draws[:n].tolist(), params) for i in range(len(survivors))])
            if not np.allclose(fast, slow, rtol=1e-5, atol=1e-6):
                raise AssertionError(f"vectorised features differ from the reference loop for {params}, n={n}")
            checked += len(survivors)
    return checked


def run(work: Path, repeats: int = 5) -> dict[str, Any]:
    """Survivor-draws per second of aligned streams + features as the trial computes them (worker.align.stream
    and worker.scorer.features) on 450 java_lcg survivors (half of them reverse, offsets 0..500, skips
    0..3) x 4,000 draws, against the plain per-survivor loop of tests/reference.py on 8 of them, both
    with worker.bench's heaviest parameters (max_offset 15: 4,015 aligned outputs per survivor). Each
    repeat times both back to back; the ratio is per repeat. The demo's first 450 survivors, so some
    streams agree with draws: before timing, both must agree (np.allclose) on 24 survivors for 5
    parameter sets (heaviest, no lag with fewer windows than asked and non-dividing residue mods, 3
    random) at 4,000 and 120 draws."""
    data, _ = demo_folders(work)
    seeds = np.load(data / "bidirectional_survivors_binary.npz")["seeds"][:SEEDS].astype(np.uint64)
    draws = np.array(json.loads((data / "train_history.json").read_text()), dtype=np.int64)
    survivors, skips = aligned(seeds, np.random.default_rng(1))
    checked = verify(survivors.take(np.arange(24)), skips[:24], draws)
    ratios, fast_rates, slow_rates = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        vectorised(survivors, skips, draws, HEAVIEST)
        fast_rates.append(len(seeds) * len(draws) / (time.perf_counter() - start))
        start = time.perf_counter()
        for i in range(REFERENCE_SEEDS):
            plain(survivors, skips, i, draws.tolist(), HEAVIEST)
        slow_rates.append(REFERENCE_SEEDS * len(draws) / (time.perf_counter() - start))
        ratios.append(fast_rates[-1] / slow_rates[-1])
    return {"scoring_ratio": figure(ratios, "x", vectorised=figure(fast_rates, "survivor-draws/s"),
                                    reference_loop=figure(slow_rates, "survivor-draws/s"), rows_verified=checked)}
