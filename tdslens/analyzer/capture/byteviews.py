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
    """`data_view[index]` where out-of-range indexes read as 0 (callers mask those rows)."""
    if len(data_view) == 0:
        return np.zeros(len(index), dtype=data_view.dtype)
    safe = np.minimum(np.maximum(index, 0), len(data_view) - 1)
    return data_view[safe]
