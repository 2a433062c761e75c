"""The PRNG registry: generator families by kind behind one protocol, and Step 1's `prng_type` codes.

A family supplies raw streams only: the output at any step of many seeds at once, vectorised over seeds.
Reduction mod `mod` happens here for every family, and alignment (which step meets which draw) is
worker/align.py's, once for all. A family that can jump (an affine map composes in closed form) offers
any step, negative ones included when its map is invertible; each family's docstring says so.

Step 1 wrote each survivor's family and direction as a code (its converter's table, below); the
direction is an alignment, not a family: a `_reverse` survivor runs the same forward generator against
its window read backwards.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from worker.contract import ContractError
from worker.prng.affine import AffineGenerator


class Generator(Protocol):
    """A family of generators: state_0 from a seed, one state per step, an output per state."""

    name: str

    def advance(self, seeds: np.ndarray, steps: int | np.ndarray) -> np.ndarray:
        """Seeds whose streams are these seeds' streams shifted `steps` ahead (one count, or one per
        seed; negative counts go back, where the family's map is invertible)."""

    def outputs(self, seeds: np.ndarray, start: int | np.ndarray, stride: int | np.ndarray, count: int,
                mod: int) -> np.ndarray:
        """(n_seeds, count) of output_dtype(mod): output mod `mod` at steps start + stride * t, t = 0..count-1, with
        `start` and `stride` one for all or one per seed. Step t's output is that of state_t."""

    def draws(self, seeds: np.ndarray, start: int, count: int, mod: int) -> np.ndarray:
        """(n_seeds, count) outputs mod `mod` at steps start..start+count-1 (the first draw is step 1)."""


GENERATORS: dict[str, Generator] = {
    # java.util.Random's LCG (without its seed scrambling): 48-bit state, the top 32 bits as output.
    "java_lcg": AffineGenerator("java_lcg", 0x5DEECE66D, 0xB, 2**48, shift=16),
    # Park & Miller's minimal standard as revised in 1993 (C++ std::minstd_rand).
    "minstd": AffineGenerator("minstd", 48271, 0, 2**31 - 1),
}

# Step 1's converter: prng_type code -> (family, reverse). Names it did not know, and java_lcg_hybrid,
# it wrote as 0; variable skip is the survivor's skip_mode, not its code.
STEP1_CODES: dict[int, tuple[str, bool]] = {
    0: ("java_lcg", False), 1: ("java_lcg", True), 2: ("mt19937", False), 3: ("mt19937", True),
    4: ("xorshift128", False), 5: ("xorshift128", True), 6: ("lcg32", False), 7: ("lcg32", True),
    8: ("minstd", False), 9: ("minstd", True), 10: ("randu", False), 11: ("randu", True),
}


def get_generator(name: str, source: str = "<job>") -> Generator:
    if name not in GENERATORS:
        raise ContractError(source, "prng.type", f"unknown PRNG {name!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[name]
