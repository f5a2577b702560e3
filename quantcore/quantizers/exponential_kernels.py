"""Compiled steps of the exponential design fitted to many samples at once
(``quantcore.quantizers.exponential_rows``) and of its measured errors.

Each kernel makes exactly the comparisons and additions of the NumPy call it stands for, in
the same order (``np.bincount``'s sums run through the input in order; a ``searchsorted`` is
a count of comparisons), so its results are that call's bits; the steps whose floating-point
routines NumPy owns (``log2``, ``exp``, ``power``, the BLAS dots) stay in NumPy.
"""

from __future__ import annotations

import math

import numpy as np

# The lockstep Brent searches' state (``BrentRows``), stepped here between two measurements.
from quantcore.design.brent_rows import _DONE, X, _advance
from quantcore.jit import njit

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@_jit
def magnitudes(rows, pick, xmax, magnitude):
    """Sample ``k`` is ``float64(rows[pick[k]]) / xmax[k]``: its ``min(|t|, 1)`` into
    ``magnitude[k]``, as ``exponential._histogram`` has them."""
    for k in range(pick.size):
        x = rows[pick[k]]
        xm = xmax[k]
        mag = magnitude[k]
        for i in range(x.size):
            mag[i] = min(abs(np.float64(x[i]) / xm), 1.0)


@_jit
def bin_runs(logs, magnitude, slope, last, centre, mass, first, counts, ordered):
    """Each sample's histogram (``exponential._histogram`` from ``logs = log2(ratio)``): bin
    ``clip(log·slope + last, 0, last)``, its count and sum of magnitudes in the input's
    order (``np.bincount``'s), its centre ``sum / count``. The non-empty bins of sample ``r``
    go to the outputs one after another (``counts[r]`` of them); ``ordered[r]``: their
    centres ascend."""
    width = int(last) + 1
    bin_mass = np.zeros(width)
    bin_first = np.zeros(width)
    index = np.empty(logs.shape[1], np.int64)
    at = 0
    for r in range(logs.shape[0]):
        row = logs[r]
        for i in range(index.size):  # apart from the sums, so that it vectorises
            index[i] = int(min(max(row[i] * slope + last, 0.0), last))
        mag = magnitude[r]
        for i in range(index.size):
            bin_mass[index[i]] += 1.0
            bin_first[index[i]] += mag[i]
        start = at
        rising = True
        for b in range(width):
            if bin_mass[b] > 0:
                c = bin_first[b] / bin_mass[b]
                if at > start and c < centre[at - 1]:
                    rising = False
                centre[at] = c
                mass[at] = bin_mass[b]
                first[at] = bin_first[b]
                at += 1
                bin_mass[b] = 0.0
                bin_first[b] = 0.0
        counts[r] = at - start
        ordered[r] = rising


@_jit
def partition(centre, mass, first, offsets, rows, bounds, fresh, splits, cell_mass,
              cell_first, moved):
    """One round of the ascent's partition for samples ``rows``: ``splits[r, j]``, how many
    bins of sample ``r`` (centres ascending, from ``offsets[r]``) lie below ``bounds[k, j]``
    (``np.searchsorted(centre, bound)``), so that bin ``i`` falls in cell
    ``#{j : splits[r, j] <= i}``, the cell ``np.searchsorted(bounds, centre, side="right")``
    gives it; ``moved[k]``: the partition is not the last round's (always, when ``fresh``);
    and each cell's mass and first moment, the bins' values added in order from 0.0 as
    ``np.bincount(cells, weights=...)`` adds them (a cell's bins are consecutive). A cell
    whose bins did not change keeps its sums."""
    cells = cell_mass.shape[1]
    start = np.empty(cells, np.int64)
    end = np.empty(cells, np.int64)
    add_to = np.empty(cells, np.int64)  # the end of the bins to add: ``start`` if none
    for k in range(rows.size):
        r = rows[k]
        base = offsets[r]
        size = offsets[r + 1] - base
        bins = centre[base : base + size]
        split = splits[r]
        changed = fresh
        old_end = 0
        for c in range(cells):
            old_start = old_end
            start[c] = end[c - 1] if c else 0
            if c < cells - 1:
                old_end = split[c]
                end[c] = max(start[c], np.searchsorted(bins, bounds[k, c]))
                split[c] = end[c]
            else:
                old_end = end[c] = size
            add_to[c] = start[c]
            if fresh or old_start != start[c] or old_end != end[c]:
                changed = True
                add_to[c] = end[c]
                cell_mass[r, c] = 0.0
                cell_first[r, c] = 0.0
        moved[k] = changed
        _add_bins(mass, first, base, start, add_to, cell_mass[r], cell_first[r])


@_jit
def _add_bins(mass, first, base, start, end, cell_mass, cell_first):
    """Add each cell's bins ``start..end`` to its sums, in order."""
    for c in range(start.size):
        m = cell_mass[c]
        f = cell_first[c]
        for i in range(base + start[c], base + end[c]):
            m += mass[i]
            f += first[i]
        cell_mass[c] = m
        cell_first[c] = f


# Up to this many magnitudes between levels, a weight's code is counted against each of
# them (a loop over the weights the compiler vectorises); beyond, it is searched for.
_COUNTED_EDGES = 32


@_jit
def log_errors(rows, pick, gain, scale, bounds, levels, err):
    """Row ``pick[k]`` of ``rows`` (float32) quantized with its own exponential design
    (``bounds[k]``: the magnitudes between its positive levels; ``levels[k]``: all its levels,
    float32) at ``gain/scale[k]``: its errors ``float64(x - ŵ)`` into ``err[k]``, as
    ``quantize`` gives them (``t = x·gain - 0.0``, the code ``ExponentialDesign.encode``'s:
    how many bounds lie at or below ``|t|``; ``ŵ = level·scale + 0.0``)."""
    half = levels.shape[1] // 2
    edges = bounds.shape[1]
    n = rows.shape[1]
    t = np.empty(n, np.float32)
    m = np.empty(n, np.float64)
    above = np.empty(n, np.int64)
    for k in range(pick.size):
        x = rows[pick[k]]
        b = bounds[k]
        g = gain[k]
        for i in range(n):
            t[i] = x[i] * g + np.float32(-0.0)
            m[i] = np.float64(abs(t[i]))
            above[i] = 0
        if edges <= _COUNTED_EDGES:
            for j in range(edges):
                bj = b[j]
                for i in range(n):
                    above[i] += bj <= m[i]
        else:
            for i in range(n):
                above[i] = np.searchsorted(b, m[i], side="right")
        level = levels[k]
        sc = scale[k]
        out = err[k]
        for i in range(n):
            a = edges if m[i] != m[i] else above[i]  # NaN sorts last
            code = half - 1 - a if t[i] < 0 else half + a
            out[i] = np.float64(x[i] - (level[code] * sc + np.float32(0.0)))


@_jit
def rho_points(state, phase, k, cell_first, cell_mass, which, power, first, mass):
    """The searches of ``q`` still waiting (``BrentRows``' ``state`` and ``phase``, one a
    sample) into ``which[:w]``; for each, ``k·log q`` at its next point into ``power`` and
    its cells' first moments and masses into ``first`` and ``mass``. Returns ``w``."""
    w = 0
    for i in range(phase.size):
        if phase[i] == _DONE:
            continue
        which[w] = i
        log_q = state[i, X]
        for j in range(k.size):
            power[w, j] = k[j] * log_q
            first[w, j] = cell_first[i, j]
            mass[w, j] = cell_mass[i, j]
        w += 1
    return w


@_jit
def rho_give(state, phase, num, which, first_dot, mass_dot, values):
    """Each waiting search's ``-ρ = -Σ S_k q^k / sqrt(Σ P_k q^2k)`` from its two dots, then
    its next step (``BrentRows.give``)."""
    for t in range(which.size):
        values[t] = -first_dot[t] / math.sqrt(mass_dot[t])
    _advance(state, phase, num, which, values)
