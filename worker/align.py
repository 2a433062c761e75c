"""Where each survivor's stream meets the draws: Step 1's sieve alignment, per survivor.

A survivor was found in a window of W draws starting at draw o (0-based, over the train draws then
the holdout draws, oldest first) with constant skip k, so k + 1 PRNG steps lie between its draws:

    forward:  draw j  <->  step o + (j - o + 1)(k + 1)
    reverse:  draw j  <->  step o + (o + W - j)(k + 1)     (the sieve read its window backwards)

Both are affine in j, step = base + stride * j, with a stride of its own per survivor. A forward
survivor's draws at steps < 1 came before its generator started and carry no evidence for it. A
reverse survivor's later draws sit at earlier steps, down through 0 and below, which an invertible
family reaches with its inverse map. With o = 0 and k = 0, forward, draw j is step j + 1: the
alignment of survivors given without one.

A survivor carries only its Step 1 trial's skip range: `choose_skips` picks its k on the fit window
alone, by the sieve's rule (the most exact agreements, the smallest k on ties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.prng import get_generator
from worker.prng.output import output_dtype
from worker.survivors import Survivors


@dataclass(frozen=True)
class Alignment:
    """draw j <-> step base + stride * j, per survivor."""

    base: np.ndarray  # int64
    stride: np.ndarray  # int64, negative for reverse survivors
    forward: np.ndarray  # bool

    @classmethod
    def sieve(cls, survivors: Survivors, skip: np.ndarray) -> Alignment:
        o, k1 = survivors.offset, np.asarray(skip, dtype=np.int64) + 1
        reverse = survivors.reverse
        base = np.where(reverse, o + (o + survivors.window) * k1, o + (1 - o) * k1)
        return cls(base, np.where(reverse, -k1, k1), ~reverse)

    def valid(self, first: int, count: int) -> np.ndarray | None:
        """(n, count): which of draws first..first+count-1 carry evidence; None when all of them do.
        A forward survivor's steps grow with j, so its evidence starts at its first draw of step >= 1."""
        starts = np.where(self.forward, -((self.base - 1) // self.stride), first)  # ceil((1 - base) / stride)
        if np.all(starts <= first):
            return None
        return np.arange(first, first + count) >= starts[:, None]


def stream(survivors: Survivors, skip: np.ndarray, first: int, count: int,
           mod: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each survivor's outputs mod `mod` aligned with draws first..first+count-1, and which of them carry
    evidence (None: all). One call serves every family: each family computes its own rows."""
    align = Alignment.sieve(survivors, skip)
    start = align.base + align.stride * first
    if len(survivors.families) == 1:  # the usual pool: no copy
        values = get_generator(survivors.families[0]).outputs(survivors.seeds, start, align.stride, count, mod)
        return values, align.valid(first, count)
    values = np.empty((len(survivors), count), dtype=output_dtype(mod))
    for index, name in enumerate(survivors.families):
        rows = np.flatnonzero(survivors.family == index)
        if len(rows):
            values[rows] = get_generator(name).outputs(survivors.seeds[rows], start[rows], align.stride[rows], count,
                                                       mod)
    return values, align.valid(first, count)


def agreements(values: np.ndarray, valid: np.ndarray | None, draws: np.ndarray) -> np.ndarray:
    """Exact agreements of each row with the draws, over the draws that carry evidence."""
    agree = values == np.asarray(draws).astype(values.dtype)  # one type: no widening of the whole matrix
    return (agree if valid is None else agree & valid).sum(axis=1, dtype=np.int32)


def choose_skips(survivors: Survivors, draws: np.ndarray, first: int, mod: int) -> np.ndarray:
    """Each survivor's constant skip in [skip_min, skip_max]: the most exact agreements with `draws`
    (draws first, first+1, ...: the fit window), the smallest skip on ties."""
    best = survivors.skip_min.copy()
    if np.array_equal(survivors.skip_min, survivors.skip_max):
        return best
    most = np.full(len(survivors), -1)
    for k in range(int(survivors.skip_min.min()), int(survivors.skip_max.max()) + 1):
        rows = np.flatnonzero((survivors.skip_min <= k) & (k <= survivors.skip_max))
        if not len(rows):
            continue
        subset = survivors.take(rows)
        found = agreements(*stream(subset, np.full(len(rows), k), first, len(draws), mod), draws)
        better = found > most[rows]
        best[rows[better]], most[rows[better]] = k, found[better]
    return best
