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

from quantcore.jit import njit

# Rows per tile: a tile of the block (``TILE_ROWS`` x 128 float64, 128 kB, and its codes'
# and errors') stays in the core's cache while its columns are rounded and pushed into each
# other; the whole block (8210 rows on a real classifier: 8 MB) went through memory once per
# column. 128 rather than 256: with the codes and errors kept in the tile too, 256 rows of
# blocks of 32 ran no faster than before (8210 x 1024, a Zen 5), 128 and 64 twice as fast.
TILE_ROWS = 128


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def round_block(
    w: np.ndarray, u: np.ndarray, inv: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    lo: int, hi: int, code_min: float, code_max: float, codes: np.ndarray, errors: np.ndarray,
) -> None:  # fmt: skip
    """Columns ``lo:hi`` of ``w`` (groups, rows, k) rounded on each row's grid (``inv``,
    ``scale``, ``offset``: (groups, rows)) into ``codes``; ``u`` (groups, hi - lo, hi - lo)
    is the block's factor: column ``j = lo + c``'s error over ``u[g, c, c]`` goes to
    ``errors[g, r, c]`` and into ``w``'s later columns of the block through row ``c`` of
    ``u``.

    The block is copied column-major a tile of rows at a time (a column's rows side by
    side), so each update runs along the rows, which the compiler vectorises, within the
    cache; the codes and errors are kept in the tile's layout too and written out with its
    weights, a row at a time (written where they were computed, each was a store of its
    own, a row's length apart: half the time in blocks of 32). Rows are independent: every
    weight still sees the same operations in the same order."""
    groups, rows, _ = w.shape
    n = hi - lo
    block = np.empty((n, TILE_ROWS))
    coded = np.empty((n, TILE_ROWS))
    erred = np.empty((n, TILE_ROWS))
    for g in range(groups):
        for first in range(0, rows, TILE_ROWS):
            m = min(TILE_ROWS, rows - first)
            for r in range(m):
                for t in range(n):
                    block[t, r] = w[g, first + r, lo + t]
            for c in range(n):
                column = block[c]
                qs = coded[c]
                err = erred[c]
                pivot = u[g, c, c]
                for r in range(m):
                    z = offset[g, first + r]
                    q = np.rint(column[r] * inv[g, first + r]) + z
                    if q < code_min:
                        q = code_min
                    elif q > code_max:
                        q = code_max
                    qs[r] = q
                    err[r] = (column[r] - (q - z) * scale[g, first + r]) / pivot
                for t in range(c + 1, n):
                    factor = u[g, c, t]
                    later = block[t]
                    for r in range(m):
                        later[r] -= err[r] * factor
            for r in range(m):
                for t in range(n):
                    w[g, first + r, lo + t] = block[t, r]
                    codes[g, first + r, lo + t] = coded[t, r]
                    errors[g, first + r, t] = erred[t, r]
