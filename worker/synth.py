"""Synthetic Step 2 data with known truth: "planted" structure every scorer parameter can find, or
"null" data with no signal at all, the baseline any optimised value must beat.

Planted: half the pool is families of a source seed and a lag-shifted copy that trails it by 1..15
steps; the rest are decoys. Time runs in regimes of a few hundred draws; a family switches on and off
between regimes but tends to stay as it was, so recent activity predicts the holdout (temporal
windows). An active family emits draws in proportion to its intensity, half of them from the source
and half from the copy, so the copy's evidence is split between lag 0 and its lag (max_offset). Most
emitted draws keep only the stream's last two digits under random hundreds (residue mods dividing 100
see them, others do not). The remaining draws are uniform noise.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from worker.files import write_atomic, write_json_atomic
from worker.params import SCORER_SPACE
from worker.prng import Generator, get_generator

MODES = ("planted", "null")
MAX_LAG = SCORER_SPACE["max_offset"].high
KEEP = 100  # digits-only draws keep the stream mod KEEP
REGIME = (300, 900)  # draws per regime, uniform
STAY_ON, TURN_ON = 0.85, 0.15  # a family's chance to be active in the next regime, given on / off
NOISE = 0.1  # share of draws that are uniform noise
DIGITS_ONLY = 0.5  # share of emitted draws that keep only the last two digits
_ROWS = 256  # member streams computed at once


def _states(generator: Generator, rng: np.random.Generator, n: int) -> np.ndarray:
    return generator.advance(rng.integers(0, 2**63, size=n, dtype=np.int64), 0)


def _regimes(rng: np.random.Generator, n_train: int, n_holdout: int,
             n_families: int) -> tuple[np.ndarray, np.ndarray]:
    """(regime of each position, active families per regime) from a persistent on/off chain. The
    regime that ends the train history goes on through the holdout: recent activity is the future's."""
    lengths = [int(rng.integers(*REGIME, endpoint=True))]
    while sum(lengths) < n_train:
        lengths.append(int(rng.integers(*REGIME, endpoint=True)))
    lengths[-1] += n_holdout
    active = np.empty((len(lengths), n_families), dtype=bool)
    active[0] = rng.random(n_families) < TURN_ON / (1 - STAY_ON + TURN_ON)  # the chain's stationary share
    for r in range(1, len(lengths)):
        active[r] = rng.random(n_families) < np.where(active[r - 1], STAY_ON, TURN_ON)
    return np.repeat(np.arange(len(lengths)), lengths)[-(n_train + n_holdout):], active


def _planted(generator: Generator, rng: np.random.Generator, n_survivors: int, n_train: int,
             n_holdout: int, mod: int) -> tuple[np.ndarray, np.ndarray]:
    total = n_train + n_holdout
    n_families = n_survivors * 3 // 8
    copies = _states(generator, rng, n_families)
    lags = rng.integers(1, MAX_LAG, size=n_families, endpoint=True)
    sources = np.empty_like(copies)
    for lag in np.unique(lags):
        sources[lags == lag] = generator.advance(copies[lags == lag], int(lag))
    members = np.concatenate([sources, copies])  # member i and i + n_families are one family
    intensity = rng.lognormal(sigma=0.5, size=n_families)
    regime, active = _regimes(rng, n_train, n_holdout, n_families)
    emitter = np.full(total, -1)
    for r in range(len(active)):
        at = np.flatnonzero((regime == r) & (rng.random(total) >= NOISE))
        on = np.flatnonzero(active[r])
        if len(on) and len(at):
            family = rng.choice(on, size=len(at), p=intensity[on] / intensity[on].sum())
            emitter[at] = family + n_families * rng.integers(0, 2, size=len(at))
    draws = rng.integers(0, mod, size=total)
    for lo in range(0, len(members), _ROWS):
        at = np.flatnonzero((emitter >= lo) & (emitter < lo + _ROWS))
        draws[at] = generator.draws(members[lo:lo + _ROWS], 1, total, mod)[emitter[at] - lo, at]
    digits = (emitter >= 0) & (rng.random(total) < DIGITS_ONLY)
    draws[digits] = draws[digits] % KEEP + KEEP * rng.integers(0, mod // KEEP, size=digits.sum())
    decoys = _states(generator, rng, n_survivors - len(members))
    return rng.permutation(np.concatenate([members, decoys])), draws


def write_synthetic(out_dir: Path, mode: str, n_survivors: int = 17126, n_train: int = 4000,
                    n_holdout: int = 1000, mod: int = 1000, prng: str = "java_lcg",
                    seed: int = 0) -> dict[str, Any]:
    """Write survivors.npz, train_history.json, holdout_history.json and meta.json; return the meta."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "planted" and (mod % KEEP or mod <= KEEP):
        raise ValueError(f"planted data keeps the last two digits: mod must be a multiple of {KEEP} above it")
    if n_survivors < 4 or n_holdout < 1 or n_train <= n_holdout:
        raise ValueError("need at least 4 survivors, a holdout, and more train draws than holdout draws")
    generator = get_generator(prng, "synth")
    rng = np.random.default_rng(seed)
    total = n_train + n_holdout
    if mode == "planted":
        seeds, draws = _planted(generator, rng, n_survivors, n_train, n_holdout, mod)
    else:
        seeds, draws = _states(generator, rng, n_survivors), rng.integers(0, mod, size=total)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    npz = io.BytesIO()
    np.savez(npz, seeds=seeds)
    write_atomic(out_dir / "survivors.npz", npz.getvalue())
    write_json_atomic(out_dir / "train_history.json", draws[:n_train].tolist())
    write_json_atomic(out_dir / "holdout_history.json", draws[n_train:].tolist())
    meta = {"prng_type": prng, "mod": mod, "mode": mode, "n_survivors": n_survivors, "n_train": n_train,
            "n_holdout": n_holdout, "seed": seed}
    write_json_atomic(out_dir / "meta.json", meta)
    return meta


def synth_command(out: Path, mode: str, n_survivors: int = 17126, n_train: int = 4000, n_holdout: int = 1000,
                  mod: int = 1000, prng: str = "java_lcg", seed: int = 0) -> int:
    """`python -m worker synth`: write the data set and say what was written."""
    write_synthetic(out, mode, n_survivors, n_train, n_holdout, mod, prng, seed)
    print(f"wrote {mode} data to {out}: {n_survivors} survivors, {n_train} train / {n_holdout} holdout draws, "
          f"{prng} mod {mod}, seed {seed}")
    return 0
