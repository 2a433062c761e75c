"""The trial's stream and evidence restated plainly: Python integers and loops, one survivor at a time.

Tests compare the vectorised worker (worker/prng, worker/align.py, worker/scorer.py) against this,
and the scoring benchmark refuses its figure unless both agree. Nothing here is vectorised or clever:
each definition reads as the chapter states it.
"""

from __future__ import annotations

import math
from typing import Any

FAMILIES = {  # name: (multiplier, increment, modulus, shift)
    "java_lcg": (0x5DEECE66D, 0xB, 2**48, 16),
    "minstd": (48271, 0, 2**31 - 1, 0),
}


def initial_state(family: str, seed: int) -> int:
    """state_0: seed mod m, and 1 for a multiplicative generator's fixed point 0."""
    _, c, m, _ = FAMILIES[family]
    s = seed % 2**64 % m
    return 1 if c % m == 0 and s == 0 else s


def walk(family: str, state: int, steps: int) -> int:
    """The state `steps` steps on, one step at a time (backwards with the inverse map)."""
    a, c, m, _ = FAMILIES[family]
    inverse = pow(a, -1, m)
    for _ in range(abs(steps)):
        state = (a * state + c) % m if steps > 0 else inverse * (state - c) % m
    return state


def sieve_step(j: int, offset: int, skip: int, reverse: bool, window: int) -> int:
    """The step that meets draw j, as Step 1's sieve aligned the survivor."""
    if reverse:
        return offset + (offset + window - j) * (skip + 1)
    return offset + (j - offset + 1) * (skip + 1)


def aligned_stream(family: str, seed: int, offset: int, skip: int, reverse: bool, window: int, first: int,
                   count: int, mod: int) -> tuple[list[int], list[bool]]:
    """Outputs mod `mod` meeting draws first..first+count-1, and which of those draws carry evidence."""
    shift = FAMILIES[family][3]
    values, valid = [], []
    state, at = initial_state(family, seed), 0
    for j in range(first, first + count):
        step = sieve_step(j, offset, skip, reverse, window)
        state, at = walk(family, state, step - at), step
        values.append((state >> shift) % mod)
        valid.append(reverse or step >= 1)
    return values, valid


def best_skip(family: str, seed: int, offset: int, skip_min: int, skip_max: int, reverse: bool, window: int,
              draws: list[int], mod: int) -> int:
    """The sieve's rule on the fit window: the most exact agreements, the smallest skip on ties."""
    best, most = skip_min, -1
    for k in range(skip_min, skip_max + 1):
        values, valid = aligned_stream(family, seed, offset, k, reverse, window, 0, len(draws), mod)
        found = sum(1 for v, ok, d in zip(values, valid, draws, strict=True) if ok and v == d)
        if found > most:
            best, most = k, found
    return best


def chance(r: int, mod: int) -> float:
    """P(x = y mod r) for x, y uniform on [0, mod), by counting each residue class."""
    counts = [0] * r
    for x in range(mod):
        counts[x % r] += 1
    return sum(c * c for c in counts) / mod**2


def effect(rate: float, p: float) -> float:
    return (rate - p) / math.sqrt(p * (1 - p))


def rate(pairs: list[tuple[bool, bool]], p: float) -> float:
    """The share of agreements among the draws with evidence; chance p where none has any."""
    judged = [agree for agree, ok in pairs if ok]
    return sum(judged) / len(judged) if judged else p


def features(values: list[int], valid: list[bool], draws: list[int], params: dict[str, Any], mod: int) -> list[float]:
    """The scorer's eight features of one survivor whose stream meets the draws (and max_offset beyond)."""
    n, max_offset = len(draws), params["max_offset"]
    p = chance(mod, mod)

    def agreement(lag: int, r: int) -> float:
        return rate([(values[t + lag] % r == draws[t] % r, valid[t + lag]) for t in range(n)], chance(r, mod))

    residues = [effect(agreement(0, params[k]), chance(params[k], mod))
                for k in ("residue_mod_1", "residue_mod_2", "residue_mod_3")]
    lagged = max((agreement(lag, mod) for lag in range(1, max_offset + 1)), default=p)
    size = min(params["temporal_window_size"], n)
    count = min(params["temporal_num_windows"], n // size)
    first = n - count * size
    windows = [rate([(values[t] == draws[t], valid[t]) for t in range(first + w * size, first + (w + 1) * size)], p)
               for w in range(count)]
    confident = sum(1 for w in windows if (w - p) / (1 - p) >= params["min_confidence_threshold"]) / count
    return [effect(agreement(0, mod), p), *residues, effect(lagged, p), effect(sum(windows) / count, p),
            effect(windows[-1], p), confident]


def quality(values: list[int], valid: list[bool], draws: list[int], mod: int) -> float:
    return rate([(v == d, ok) for v, ok, d in zip(values, valid, draws, strict=False)], chance(mod, mod))
