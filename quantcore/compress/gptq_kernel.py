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
from quantcore.quantizers.transpose_kernel import transpose

# Rows per tile: a tile of the block (``TILE_ROWS`` x 128 float64, 128 kB, and its codes'
# and errors') stays in the core's cache while its columns are rounded and pushed into each
# other; the whole block (8210 rows on a real classifier: 8 MB) went through memory once per
# column. 128 rather than 256: with the codes and errors kept in the tile too, 256 rows of
# blocks of 32 ran no faster than before (8210 x 1024, a Zen 5), 128 and 64 twice as fast.
TILE_ROWS = 128
# Columns whose errors go into the block's later columns together: each later column is read
# and written once for ``GATHER`` of them (its updates still in the columns' order), not once
# for each. One thread, 8210 x 1024 (a Zen 4): blocks of 128 0.140 -> 0.112 s, and 0.086 with
# the transposed copies below; blocks of 32 0.134 -> 0.067. Eight columns ran no faster.
GATHER = 4


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def round_block(
    w: np.ndarray, u: np.ndarray, inv: np.ndarray, scale: np.ndarray, offset: np.ndarray,
    lo: int, hi: int, code_min: float, code_max: float, codes: np.ndarray, errors: np.ndarray,
) -> None:  # fmt: skip
    """Columns ``lo:hi`` of ``w`` (groups, rows, k) rounded on each row's grid (``inv``,
    ``scale``, ``offset``: (groups, rows)) into ``codes``; ``u`` (groups, hi - lo, hi - lo)
    is the block's factor: column ``j = lo + c``'s error over ``u[g, c, c]`` goes to
    ``errors[g, r, c]`` and into ``w``'s later columns of the block through row ``c`` of
    ``u``. ``w``, ``codes`` and ``errors`` are C-contiguous.

    The block is copied column-major a tile of rows at a time (a column's rows side by
    side), so each update runs along the rows, which the compiler vectorises, within the
    cache; the codes and errors are kept in the tile's layout too and written out with its
    weights. The copies in and out are 8 x 8 transposes in vector registers
    (``transpose_kernel``): element by element, each was a store a row's length apart.
    Columns are rounded ``GATHER`` at a time: each column's error first goes into the
    group's own later columns, then the group's errors into every later column of the
    block, one after another in the columns' order. Rows are independent: every weight
    still sees the same operations in the same order."""
    groups, rows, k = w.shape
    n = hi - lo
    block = np.empty((n, TILE_ROWS))
    coded = np.empty((n, TILE_ROWS))
    erred = np.empty((n, TILE_ROWS))
    rounded = np.empty((TILE_ROWS, n))  # the tile's codes in rows, before their conversion
    flat_w, flat_errors = w.reshape(w.size), errors.reshape(errors.size)
    flat_block, flat_coded = block.reshape(block.size), coded.reshape(coded.size)
    flat_erred, flat_rounded = erred.reshape(erred.size), rounded.reshape(rounded.size)
    for g in range(groups):
        for first in range(0, rows, TILE_ROWS):
            m = min(TILE_ROWS, rows - first)
            at = (g * rows + first) * k + lo
            transpose(flat_w, at, k, flat_block, 0, TILE_ROWS, m, n)
            for c0 in range(0, n, GATHER):
                c1 = min(c0 + GATHER, n)
                for c in range(c0, c1):
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
                    for t in range(c + 1, c1):
                        _push(block[t], err, u[g, c, t], m)
                if c1 - c0 == GATHER:
                    e0, e1, e2, e3 = erred[c0], erred[c0 + 1], erred[c0 + 2], erred[c0 + 3]
                    for t in range(c1, n):
                        f0, f1, f2, f3 = u[g, c0, t], u[g, c0 + 1, t], u[g, c0 + 2, t], \
                            u[g, c0 + 3, t]  # fmt: skip
                        later = block[t]
                        for r in range(m):
                            x = later[r]
                            x -= e0[r] * f0
                            x -= e1[r] * f1
                            x -= e2[r] * f2
                            x -= e3[r] * f3
                            later[r] = x
                else:  # the block's last few columns
                    for c in range(c0, c1):
                        for t in range(c1, n):
                            _push(block[t], erred[c], u[g, c, t], m)
            transpose(flat_block, 0, TILE_ROWS, flat_w, at, k, n, m)
            transpose(flat_erred, 0, TILE_ROWS, flat_errors, (g * rows + first) * n, n, n, m)
            transpose(flat_coded, 0, TILE_ROWS, flat_rounded, 0, n, n, m)
            for r in range(m):
                for t in range(n):
                    codes[g, first + r, lo + t] = rounded[r, t]


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")
def _push(later: np.ndarray, err: np.ndarray, factor: float, m: int) -> None:
    """One column's errors times ``factor`` out of a later column's first ``m`` rows."""
    for r in range(m):
        later[r] -= err[r] * factor
