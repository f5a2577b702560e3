"""GPTQ's column loop within one block, compiled: round a column, push its error into the
block's later columns, for every row at once.

``gptq._round_rows`` runs this loop once per column in NumPy (about ten array operations
on ``(groups, rows)`` slices a column), which on layers of a few thousand columns costs
seconds of interpreter time. Here each row runs through the block's columns in one pass;
every operation is the NumPy loop's IEEE operation in float64, in the same order per
element (no contraction into fused multiply-adds), so codes and errors agree bit for bit
(tests compare the two).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def round_block(
    w: np.ndarray, u: np.ndarray, inv: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    lo: int, hi: int, code_min: float, code_max: float, codes: np.ndarray, errors: np.ndarray,
) -> None:  # fmt: skip
    """Columns ``lo:hi`` of ``w`` (groups, rows, k) rounded on each row's grid (``inv``,
    ``scale``, ``offset``: (groups, rows)) into ``codes``; each column's error over
    ``u[g, j, j]`` goes to ``errors[g, r, j - lo]`` and into ``w``'s later columns of the
    block through row ``j`` of ``u``."""
    groups, rows, _ = w.shape
    for g in range(groups):
        for r in range(rows):
            s, i, z = scale[g, r], inv[g, r], offset[g, r]
            for j in range(lo, hi):
                q = np.rint(w[g, r, j] * i) + z
                if q < code_min:
                    q = code_min
                elif q > code_max:
                    q = code_max
                codes[g, r, j] = q
                err = (w[g, r, j] - (q - z) * s) / u[g, j, j]
                errors[g, r, j - lo] = err
                for t in range(j + 1, hi):
                    w[g, r, t] -= err * u[g, j, t]
