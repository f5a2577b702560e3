"""Compiled steps of the exponential design fitted to many samples at once
(``quantcore.quantizers.exponential_rows``) and of its measured errors.

Each kernel makes exactly the comparisons and additions of the NumPy call it stands for, in
the same order (``np.bincount``'s sums run through the input in order; a ``searchsorted`` is
a count of comparisons), so its results are that call's bits; the steps whose floating-point
routines NumPy owns (``log2``, ``exp``, ``power``, the BLAS dots) stay in NumPy.
"""

from __future__ import annotations

import numpy as np

from quantcore.jit import njit

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@_jit
def bin_sums(index, magnitude, mass, first):
    """Each row's ``np.bincount(index[r])`` and ``np.bincount(index[r], weights=magnitude[r])``
    into ``mass[r]`` and ``first[r]`` (zeroed by the caller)."""
    for r in range(index.shape[0]):
        for i in range(index.shape[1]):
            b = index[r, i]
            mass[r, b] += 1.0
            first[r, b] += magnitude[r, i]


@_jit
def cell_splits(centre, offsets, rows, bounds, splits):
    """``splits[k, j]``: how many bins of row ``rows[k]`` (centres ascending, from
    ``offsets[r]``) lie below ``bounds[k, j]``, ``np.searchsorted(centre, bound)``. With the
    bins in order, bin ``i`` falls in cell ``#{j : splits[k, j] <= i}``, the cell
    ``np.searchsorted(bounds, centre, side="right")`` gives it."""
    for k in range(rows.size):
        first_bin, end = offsets[rows[k]], offsets[rows[k] + 1]
        for j in range(bounds.shape[1]):
            value = bounds[k, j]
            lo, hi = first_bin, end
            while lo < hi:
                mid = (lo + hi) >> 1
                if centre[mid] < value:
                    lo = mid + 1
                else:
                    hi = mid
            splits[k, j] = lo - first_bin


@_jit
def cell_sums(mass, first, offsets, rows, splits, cell_mass, cell_first):
    """Each cell's mass and first moment, the bins' values added in order from 0.0, as
    ``np.bincount(cells, weights=...)`` adds them (the cells' bins are consecutive)."""
    cells = cell_mass.shape[1]
    for k in range(rows.size):
        base = offsets[rows[k]]
        size = offsets[rows[k] + 1] - base
        start = 0
        for c in range(cells):
            end = splits[k, c] if c < cells - 1 else size
            m = 0.0
            f = 0.0
            for i in range(base + start, base + end):
                m += mass[i]
                f += first[i]
            cell_mass[k, c] = m
            cell_first[k, c] = f
            start = max(start, end)


@_jit
def log_errors(rows, pick, gain, scale, bounds, levels, err):
    """Row ``pick[k]`` of ``rows`` (float32) quantized with its own exponential design
    (``bounds[k]``: the magnitudes between its positive levels; ``levels[k]``: all its levels,
    float32) at ``gain/scale[k]``: its errors ``float64(x - ŵ)`` into ``err[k]``, as
    ``quantize`` gives them (``t = x·gain - 0.0``, the code ``ExponentialDesign.encode``'s,
    ``ŵ = level·scale + 0.0``)."""
    half = levels.shape[1] // 2
    edges = bounds.shape[1]
    for k in range(pick.size):
        x = rows[pick[k]]
        b = bounds[k]
        level = levels[k]
        g, sc = gain[k], scale[k]
        out = err[k]
        for i in range(x.size):
            t = x[i] * g + np.float32(-0.0)
            m = np.float64(abs(t))
            lo, hi = 0, edges
            if m != m:  # NaN sorts last
                lo = edges
            while lo < hi:
                mid = (lo + hi) >> 1
                if b[mid] <= m:
                    lo = mid + 1
                else:
                    hi = mid
            code = half - 1 - lo if t < 0 else half + lo
            v = level[code] * sc + np.float32(0.0)
            out[i] = np.float64(x[i] - v)
