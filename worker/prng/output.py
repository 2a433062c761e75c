"""The integer type of a stream of outputs mod `mod`, shared by every family."""

from __future__ import annotations

import numpy as np


def output_dtype(mod: int) -> np.dtype:
    """The smallest unsigned integer type that holds 0..mod-1: uint16 for Step 1's mod 1000, so a
    (survivors x draws) stream moves a quarter of int64's bytes through every comparison, and its
    residues take unsigned division (about twice as fast as signed)."""
    for dtype in (np.uint16, np.uint32):
        if mod - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
