"""Unaligned integer views over a bytes buffer, for gathering header fields with numpy.

Why: capture records and packet headers sit at arbitrary byte offsets. A numpy view with a
one-byte stride reads an integer starting at *any* offset, so ``u32le(buf)[offsets]`` gathers a
field of a million records in one fancy-index operation instead of a million ``struct`` calls.
"""

from __future__ import annotations

import numpy as np


def view(data: bytes | memoryview, dtype: str) -> np.ndarray:
    """Array whose element i is the integer of type `dtype` (e.g. '<u4', '>u2') at byte i."""
    dt = np.dtype(dtype)
    count = len(data) - dt.itemsize + 1
    if count <= 0:
        return np.zeros(0, dtype=dt)
    return np.ndarray(shape=(count,), dtype=dt, buffer=data, offset=0, strides=(1,))


def gather(data_view: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`data_view[index]` for non-negative indexes; those past the end read the last element
    (callers mask those rows by length checks)."""
    if len(data_view) == 0:
        return np.zeros(len(index), dtype=data_view.dtype)
    if len(index) and (index[-1] >= len(data_view) or index.max() >= len(data_view)):
        index = np.minimum(index, len(data_view) - 1)
    return data_view[index]


_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def u32_pairs(data: bytes | memoryview, byte_order: str, index: np.ndarray) -> tuple:
    """Two consecutive uint32 fields at each index, read as one 8-byte gather (int64 results).

    One unaligned gather costs about as much whatever its width, so reading 8 bytes at once
    halves the cost of walking record headers."""
    x = gather(view(data, byte_order + "u8"), index)
    lo, hi = (x & _LOW32).astype(np.int64), (x >> _SHIFT32).astype(np.int64)
    return (lo, hi) if byte_order == "<" else (hi, lo)
