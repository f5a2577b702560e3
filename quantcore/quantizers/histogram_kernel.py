"""Compiled counting for ``stats.Histogram.add``: one pass over the values where NumPy makes
six (a float64 copy, the shift, the scale, ``floor``, the clip and the integer cast before
``bincount``: 13 ns a value, most of the report's before/after figures on a 13.5M-parameter
model). Each value's bin comes from the same float64 operations in the same order, so the
counts are NumPy's."""

from __future__ import annotations

import numpy as np

from quantcore.jit import njit


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def count_bins(flat: np.ndarray, lo: float, scale: float, counts: np.ndarray) -> None:
    """Add each of ``flat``'s values (finite) to ``counts`` at bin
    ``floor((value - lo) * scale)``, clamped into the first and last bins."""
    top = np.float64(counts.size - 1)
    for i in range(flat.size):
        index = np.floor((np.float64(flat[i]) - lo) * scale)
        if index < 0.0:
            index = 0.0
        elif index > top:
            index = top
        counts[int(index)] += 1
