"""Step 1's sieve, as the demo data runs it: which candidate seeds agree with a window of draws.

A pass tries every candidate with every constant skip k in [skip_min, skip_max]: window draw i meets
the output at step o + (i + 1)(k + 1) (worker/align.py), a draw matches when output mod `mod` equals
it, and a seed's rate is its best share of matches over the skips (the smallest k on ties). It passes
when that rate reaches the threshold (compared in float32, as Step 1 does). The reverse pass runs the
same generator against the window read backwards; a trial's survivors are the seeds that pass both.

Speed: no loop per step or per seed. The states at every compared step come straight from each seed by
the affine jump (A_n s + C_n, one map per compared step, shared by every seed), in blocks of seeds x
steps with in-place uint64 arithmetic; "output = draw (mod m)" is tested without a division: with
m = 2^a * q, q odd, y = output + m - draw is a multiple of m iff y * q^-1 (mod 2^64) has its low a bits
clear and is small (Granlund and Montgomery's exact-division test).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from worker.prng.affine import AffineGenerator

_ROWS, _COLS = 1024, 320  # seeds x compared steps per block: cache-sized in-place work
CHUNK = 1 << 20  # candidates handed out at a time


@dataclass(frozen=True)
class Candidates:
    """The seeds a sieve run tries: a contiguous range [start, start + count), plus extra seeds
    outside it (a residue class, say)."""

    start: int
    count: int
    extra: np.ndarray

    def __len__(self) -> int:
        return self.count + len(self.extra)

    def chunks(self) -> Iterator[np.ndarray]:
        for lo in range(self.start, self.start + self.count, CHUNK):
            yield np.arange(lo, min(lo + CHUNK, self.start + self.count), dtype=np.uint64)
        for lo in range(0, len(self.extra), CHUNK):
            yield self.extra[lo:lo + CHUNK].astype(np.uint64)


@dataclass(frozen=True)
class Passed:
    """The seeds that passed one pass, with their best rate and the skip that gave it."""

    seeds: np.ndarray  # uint64
    rate: np.ndarray  # float32
    skip: np.ndarray  # int64


class _Matcher:
    """out = d (mod m) for 32-bit outputs, as a multiply and a mask."""

    def __init__(self, mod: int):
        self.low = (mod & -mod) - 1  # 2^a - 1
        q = mod // (self.low + 1)
        self.inverse = np.uint64(pow(q, -1, 2**64))
        bound = (2**32 + mod) // q + 1  # y < 2^32 + m, so a multiple of m maps below this
        self.mask = np.uint64(((2**64 - 1) ^ ((1 << bound.bit_length()) - 1)) | self.low)
        self.mod = mod

    def offsets(self, draws: np.ndarray) -> np.ndarray:
        """(m - d) * q^-1 mod 2^64 per draw, so that out * q^-1 + offset = (out + m - d) * q^-1."""
        return np.array([(self.mod - int(d)) * int(self.inverse) % 2**64 for d in draws], dtype=np.uint64)


def sieve_pass(generator: AffineGenerator, candidates: Candidates, window: np.ndarray, offset: int,
               skips: range, threshold: float, mod: int, reverse: bool = False) -> Passed:
    """The candidates whose best rate over `skips` against `window` (read backwards for the reverse
    pass), at the sieve's alignment from `offset`, reaches `threshold`."""
    draws = np.asarray(window, dtype=np.int64)[::-1] if reverse else np.asarray(window, dtype=np.int64)
    size = len(draws)
    steps = [offset + (i + 1) * (k + 1) for k in skips for i in range(size)]
    maps = [generator.jump(s) for s in steps]
    a = np.array([m[0] for m in maps], dtype=np.uint64)
    c = np.array([m[1] for m in maps], dtype=np.uint64)
    matcher = _Matcher(mod)
    e = np.tile(matcher.offsets(draws), len(skips))
    keep: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for chunk in candidates.chunks():
        for lo in range(0, len(chunk), _ROWS):
            seeds = chunk[lo:lo + _ROWS]
            counts = _matches(generator, generator.states(seeds), a, c, e, matcher).reshape(len(seeds), len(skips),
                                                                                         size).sum(axis=2)
            best = counts.argmax(axis=1)  # the first maximum: the smallest skip
            rate = counts[np.arange(len(seeds)), best].astype(np.float32) / np.float32(size)
            ok = np.flatnonzero(rate >= np.float32(threshold))
            if len(ok):
                keep.append((seeds[ok], rate[ok], np.asarray(skips)[best[ok]]))
    if not keep:
        return Passed(np.array([], np.uint64), np.array([], np.float32), np.array([], np.int64))
    return Passed(*(np.concatenate(part) for part in zip(*keep, strict=True)))


def _matches(generator: AffineGenerator, states: np.ndarray, a: np.ndarray, c: np.ndarray, e: np.ndarray,
             matcher: _Matcher) -> np.ndarray:
    """(seeds, steps) bool: does each seed's output at each compared step match its draw."""
    out = np.empty((len(states), len(a)), dtype=bool)
    block = np.empty((len(states), min(_COLS, len(a))), dtype=np.uint64)
    column = states[:, None]
    for lo in range(0, len(a), _COLS):
        hi = min(lo + _COLS, len(a))
        b = block[:, :hi - lo]
        np.multiply(column, a[None, lo:hi], out=b)
        b += c[None, lo:hi]
        generator._reduce(b)
        b >>= np.uint64(generator.shift)
        b *= matcher.inverse
        b += e[None, lo:hi]
        b &= matcher.mask
        np.equal(b, 0, out=out[:, lo:hi])
    return out
