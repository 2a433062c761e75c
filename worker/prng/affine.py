"""Affine congruential generators: s -> (a*s + c) mod m, output = s >> shift.

State and seeding: state_0 = seed mod m (a multiplicative generator cannot start at its fixed point 0
and starts at 1, as C++'s linear_congruential_engine does). Parallel features: an affine map composes
with itself in closed form, so k steps are one map found by squaring in O(log k), for one k or one per
seed; with a multiplier prime to m the map is invertible and negative steps go back. The maps for
0..n-1 steps of one stride come from doubling a table in O(log n) numpy operations, so a (seeds x
steps) matrix is broadcast block by block, with no Python loop per seed or per draw. Compatibility:
numpy uint64 arithmetic is exact when m is a power of two (overflow loses only high bits the mask
discards, as m divides 2^64) or when m <= 2^32 (products stay below 2^64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worker.prng.output import output_dtype

_ROWS = 32  # seeds per block in outputs(): in-place work on cache-sized blocks is ~2x whole-matrix temporaries
Map = tuple[int, int]  # (multiplier, increment): x -> multiplier*x + increment


@dataclass(frozen=True)
class AffineGenerator:
    name: str
    multiplier: int
    increment: int
    modulus: int
    shift: int = 0

    def __post_init__(self) -> None:
        if not (self.modulus <= 2**32 or self._power_of_two and self.modulus < 2**64):
            raise ValueError(f"{self.name}: modulus {self.modulus} is not exact in uint64 arithmetic")
        if math.gcd(self.multiplier, self.modulus) != 1:
            raise ValueError(f"{self.name}: multiplier {self.multiplier} is not invertible mod {self.modulus}")

    @property
    def _power_of_two(self) -> bool:
        return self.modulus & (self.modulus - 1) == 0

    def _reduce(self, y: np.ndarray) -> np.ndarray:
        """y mod m, in place."""
        if self._power_of_two:
            y &= np.uint64(self.modulus - 1)
        else:
            y %= np.uint64(self.modulus)
        return y

    def _compose(self, first: Map, then: Map) -> Map:
        """The map `then(first(x))`."""
        (a1, c1), (a2, c2) = first, then
        return a2 * a1 % self.modulus, (a2 * c1 + c2) % self.modulus

    def _step(self, backwards: bool = False) -> Map:
        """One step forward, or its inverse: x -> a^-1 x - a^-1 c."""
        if not backwards:
            return self.multiplier % self.modulus, self.increment % self.modulus
        inverse = pow(self.multiplier, -1, self.modulus)
        return inverse, -inverse * self.increment % self.modulus

    def jump(self, steps: int) -> Map:
        """(A, C) with state_{t+steps} = (A*state_t + C) mod m, by squaring: O(log |steps|)."""
        result, power = (1, 0), self._step(backwards=steps < 0)
        steps = abs(steps)
        while steps:
            if steps & 1:
                result = self._compose(result, power)
            power = self._compose(power, power)
            steps >>= 1
        return result

    def states(self, seeds: np.ndarray) -> np.ndarray:
        """state_0 of each seed."""
        s = np.asarray(seeds).astype(np.uint64) % np.uint64(self.modulus)
        if self.increment % self.modulus == 0:
            s[s == 0] = 1
        return s

    def advance(self, seeds: np.ndarray, steps: int | np.ndarray) -> np.ndarray:
        states = self.states(seeds)
        if np.ndim(steps) == 0:
            a, c = self.jump(int(steps))
            return self._reduce(np.uint64(a) * states + np.uint64(c))
        steps = np.broadcast_to(np.asarray(steps, dtype=np.int64), states.shape)
        for backwards in (False, True):
            rows = np.flatnonzero(steps < 0 if backwards else steps >= 0)
            if len(rows):
                a, c = self._jumps(np.abs(steps[rows]).astype(np.uint64), self._step(backwards))
                states[rows] = self._reduce(a * states[rows] + c)
        return states

    def _jumps(self, counts: np.ndarray, step: Map) -> tuple[np.ndarray, np.ndarray]:
        """Per-element maps for `counts` applications of `step`: squaring, one bit of every count at once."""
        a, c = np.ones(len(counts), dtype=np.uint64), np.zeros(len(counts), dtype=np.uint64)
        power = step
        while counts.any():
            bit = np.flatnonzero(counts & np.uint64(1))
            pa, pc = np.uint64(power[0]), np.uint64(power[1])
            a[bit], c[bit] = self._reduce(pa * a[bit]), self._reduce(pa * c[bit] + pc)
            power = self._compose(power, power)
            counts = counts >> np.uint64(1)
        return a, c

    def _powers(self, stride: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The maps for 0, stride, 2*stride, ... (count of them), by doubling: map(n + t) = map(t) after
        map(n)."""
        a0, c0 = self.jump(stride)
        a = np.array([1, a0], dtype=np.uint64)[:count]
        c = np.array([0, c0], dtype=np.uint64)[:count]
        while len(a) < count:  # map(n) = map(n-1) then one stride
            an, cn = self._reduce(np.uint64(a0) * a[-1:]), self._reduce(np.uint64(a0) * c[-1:] + np.uint64(c0))
            a, c = np.concatenate([a, self._reduce(a * an)]), np.concatenate([c, self._reduce(a * cn + c)])
        return a[:count], c[:count]

    def outputs(self, seeds: np.ndarray, start: int | np.ndarray, stride: int | np.ndarray, count: int,
                mod: int) -> np.ndarray:
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        base = self.advance(seeds, start)
        strides = np.broadcast_to(np.asarray(stride, dtype=np.int64), base.shape)
        out = np.empty((len(base), count), dtype=output_dtype(mod))
        for d in np.unique(strides):
            a, c = self._powers(int(d), count)
            rows = np.flatnonzero(strides == d)
            for lo in range(0, len(rows), _ROWS):  # in place, a cache-sized block at a time
                at = rows[lo:lo + _ROWS]
                block = np.multiply(base[at, None], a)
                block += c
                self._reduce(block)
                block >>= np.uint64(self.shift)
                block %= np.uint64(mod)
                out[at] = block
        return out

    def draws(self, seeds: np.ndarray, start: int, count: int, mod: int) -> np.ndarray:
        if start < 1 or count < 0:
            raise ValueError(f"positions start at 1 (got start={start}, count={count})")
        return self.outputs(seeds, start, 1, count, mod)
