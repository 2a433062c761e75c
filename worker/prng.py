"""The PRNG registry: each generator turns survivor seeds into their draw streams, vectorised over seeds.

Both generators are affine congruential maps s -> (a*s + c) mod m. An affine map composes with itself
in closed form, so k steps are one map found by squaring in O(log k), and the maps for 1..n steps
come from doubling a table in O(log n) numpy operations: a stream can start at any position, and the
(seeds x positions) matrix is broadcast block by block, with no Python loop per seed or per draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.contract import ContractError

_ROWS = 32  # seeds per block in draws(): in-place work on cache-sized blocks is ~2x whole-matrix temporaries


class Generator(Protocol):
    name: str

    def advance(self, seeds: np.ndarray, steps: int) -> np.ndarray:
        """The seeds whose streams are these seeds' streams shifted `steps` positions ahead."""
        ...

    def draws(self, seeds: np.ndarray, start: int, count: int, mod: int) -> np.ndarray:
        """(n_seeds, count) draws at stream positions start..start+count-1 (the first draw is 1)."""
        ...


def _compose(first: tuple[int, int], then: tuple[int, int], modulus: int) -> tuple[int, int]:
    """The affine map `then(first(x))`, both given as (multiplier, increment)."""
    (a1, c1), (a2, c2) = first, then
    return a2 * a1 % modulus, (a2 * c1 + c2) % modulus


@dataclass(frozen=True)
class AffineGenerator:
    """state_0 = seed mod m; state_t = (multiplier*state_{t-1} + increment) mod m;
    output_t = state_t >> shift; draw_t = output_t mod `mod`.

    numpy uint64 arithmetic is exact for this when m is a power of two (overflow only loses high bits
    the mask discards, as m divides 2^64) or when m <= 2^32 (products stay below 2^64)."""

    name: str
    multiplier: int
    increment: int
    modulus: int
    shift: int = 0

    def __post_init__(self) -> None:
        if not (self.modulus <= 2**32 or self._power_of_two and self.modulus < 2**64):
            raise ValueError(f"{self.name}: modulus {self.modulus} is not exact in uint64 arithmetic")

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

    def _affine(self, a: np.ndarray, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(a*x + c) mod m, elementwise in uint64."""
        return self._reduce(np.asarray(a * x + c))

    def jump(self, steps: int) -> tuple[int, int]:
        """(A, C) with state_{t+steps} = (A*state_t + C) mod m, by squaring: O(log steps)."""
        if steps < 0:
            raise ValueError(f"cannot jump {steps} steps back")
        result, power = (1, 0), (self.multiplier, self.increment)
        while steps:
            if steps & 1:
                result = _compose(result, power, self.modulus)
            power = _compose(power, power, self.modulus)
            steps >>= 1
        return result

    def _table(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The maps for 1..count steps, by doubling: map(n + t) = map(t) after map(n)."""
        a = np.array([self.multiplier % self.modulus], dtype=np.uint64)
        c = np.array([self.increment % self.modulus], dtype=np.uint64)
        while len(a) < count:
            a, c = (np.concatenate([a, self._affine(a, a[-1:], np.zeros_like(a))]),
                    np.concatenate([c, self._affine(a, c[-1:], c)]))
        return a[:count], c[:count]

    def states(self, seeds: np.ndarray) -> np.ndarray:
        """state_0 of each seed. As in C++'s linear_congruential_engine, a multiplicative generator
        (increment 0) cannot start at its fixed point 0 and starts at 1 instead."""
        s = np.asarray(seeds).astype(np.uint64) % np.uint64(self.modulus)
        if self.increment % self.modulus == 0:
            s[s == 0] = 1
        return s

    def advance(self, seeds: np.ndarray, steps: int) -> np.ndarray:
        a, c = self.jump(steps)
        return self._affine(np.uint64(a), self.states(seeds), np.uint64(c))

    def draws(self, seeds: np.ndarray, start: int, count: int, mod: int) -> np.ndarray:
        if start < 1 or count < 0:
            raise ValueError(f"positions start at 1 (got start={start}, count={count})")
        base = self.advance(seeds, start - 1)
        a, c = self._table(count)
        out = np.empty((len(base), count), dtype=np.uint64)
        for row in range(0, len(base), _ROWS):  # in place, a cache-sized block at a time
            block = out[row:row + _ROWS]
            np.multiply(base[row:row + _ROWS, None], a, out=block)
            block += c
            self._reduce(block)
            block >>= np.uint64(self.shift)
            block %= np.uint64(mod)
        return out.view(np.int64)


GENERATORS: dict[str, Generator] = {
    # java.util.Random's LCG (without its seed scrambling): 48-bit state, the top 32 bits as output.
    "java_lcg": AffineGenerator("java_lcg", 0x5DEECE66D, 0xB, 2**48, shift=16),
    # Park & Miller's minimal standard as revised in 1993 (C++ std::minstd_rand).
    "minstd": AffineGenerator("minstd", 48271, 0, 2**31 - 1),
}


def get_generator(name: str, source: str = "<job>") -> Generator:
    if name not in GENERATORS:
        raise ContractError(source, "prng.type", f"unknown PRNG {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
