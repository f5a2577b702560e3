"""Compiled per-channel moments: each row's minimum, maximum, mean and sum of squared
deviations in one kernel, bit for bit NumPy's (``normalize.channel_moments``' reference).

The reference converts a block of rows to float64, then runs ``min``, ``max``, ``mean`` and
``einsum("ij,ij->i", dev, dev)`` over it: six passes and two float64 temporaries the size of
the block, about 40% of a per-channel quantization. Here each row is converted once into a
buffer that stays in cache, and the sums follow NumPy's own order: the mean is its pairwise
sum (``block_kernels.pairwise``) divided by the count; ``m2`` is einsum's sum of products as
its baseline build runs it (two 64-bit lanes, eight values a step taken last pair first, the
rest a pair at a time, the lanes added at the end; a multiply then an add, no fused
multiply-add). A NumPy built otherwise would sum in another order: ``normalize`` checks the
kernel against the reference once a process and keeps the reference where they differ.
"""

from __future__ import annotations

import numpy as np

from quantcore.jit import njit
from quantcore.quantizers.block_kernels import _pairwise_leaf

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


_inline = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")
ROWS = 4  # rows a pass: their sums' dependency chains run side by side


@_inline
def _eight(row, i, centre, a0, a1):
    """einsum's step: eight deviations' squares into the two lanes, the last pair first."""
    d0 = row[i] - centre
    d1 = row[i + 1] - centre
    d2 = row[i + 2] - centre
    d3 = row[i + 3] - centre
    d4 = row[i + 4] - centre
    d5 = row[i + 5] - centre
    d6 = row[i + 6] - centre
    d7 = row[i + 7] - centre
    a0 = d6 * d6 + a0
    a1 = d7 * d7 + a1
    a0 = d4 * d4 + a0
    a1 = d5 * d5 + a1
    a0 = d2 * d2 + a0
    a1 = d3 * d3 + a1
    a0 = d0 * d0 + a0
    a1 = d1 * d1 + a1
    return a0, a1


@_inline
def _rest(row, i, n, centre, a0, a1):
    """einsum's tail: pairs, then a last value in the first lane; the lanes added."""
    while n - i >= 2:
        d0 = row[i] - centre
        d1 = row[i + 1] - centre
        a0 = d0 * d0 + a0
        a1 = d1 * d1 + a1
        i += 2
    if i < n:
        d0 = row[i] - centre
        a0 = d0 * d0 + a0
    return a0 + a1


@_inline
def _sums_of_squares(buf, i, n, c0, c1, c2, c3):
    """``einsum("i,i->", d, d)`` of ``d = buf[q, i:n] - c_q`` for the four rows, NumPy's
    order."""
    r0, r1, r2, r3 = buf[0], buf[1], buf[2], buf[3]
    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = 0.0
    while n - i >= 8:
        a00, a01 = _eight(r0, i, c0, a00, a01)
        a10, a11 = _eight(r1, i, c1, a10, a11)
        a20, a21 = _eight(r2, i, c2, a20, a21)
        a30, a31 = _eight(r3, i, c3, a30, a31)
        i += 8
    return (_rest(r0, i, n, c0, a00, a01), _rest(r1, i, n, c1, a10, a11),
            _rest(r2, i, n, c2, a20, a21), _rest(r3, i, n, c3, a30, a31))  # fmt: skip


@_inline
def _widen(rows, picks, buf, n):
    """Four rows into ``buf`` as float64; returns their extremes."""
    p0, p1, p2, p3 = picks
    lo0 = hi0 = np.float64(rows[p0, 0])
    lo1 = hi1 = np.float64(rows[p1, 0])
    lo2 = hi2 = np.float64(rows[p2, 0])
    lo3 = hi3 = np.float64(rows[p3, 0])
    for j in range(n):
        x0 = np.float64(rows[p0, j])
        x1 = np.float64(rows[p1, j])
        x2 = np.float64(rows[p2, j])
        x3 = np.float64(rows[p3, j])
        buf[0, j] = x0
        buf[1, j] = x1
        buf[2, j] = x2
        buf[3, j] = x3
        lo0, hi0 = min(lo0, x0), max(hi0, x0)
        lo1, hi1 = min(lo1, x1), max(hi1, x1)
        lo2, hi2 = min(lo2, x2), max(hi2, x2)
        lo3, hi3 = min(lo3, x3), max(hi3, x3)
    return (lo0, lo1, lo2, lo3), (hi0, hi1, hi2, hi3)


@_jit
def _pairwise_plan(n):
    """NumPy's pairwise sum of ``n`` values as a postfix program: ``(start, size)`` pushes a
    leaf's sum (at most 128 values), ``(-1, 0)`` replaces the top two sums by theirs (the
    earlier one first); runs longer than 128 split at half rounded down to a multiple of 8."""
    plan = np.empty((2 * (n // 64 + 2), 2), np.int64)
    pending = np.empty((128, 2), np.int64)  # runs to split or sum, last first (2 a level)
    pending[0, 0], pending[0, 1] = 0, n
    top, length = 1, 0
    while top:
        top -= 1
        start, size = pending[top, 0], pending[top, 1]
        if start < 0 or size <= 128:
            plan[length, 0], plan[length, 1] = start, size
            length += 1
            continue
        half = size // 2
        half -= half % 8
        pending[top, 0], pending[top, 1] = -1, 0  # after both halves: add them
        pending[top + 1, 0], pending[top + 1, 1] = start + half, size - half
        pending[top + 2, 0], pending[top + 2, 1] = start, half
        top += 3
    return plan[:length]


@_inline
def _pairwise_rows(buf, plan, sums, centres, n):
    """Each row's pairwise sum (``plan``), divided by ``n``, into ``centres``."""
    top = 0
    for k in range(plan.shape[0]):
        start, size = plan[k, 0], plan[k, 1]
        if start >= 0:
            for q in range(ROWS):
                sums[top, q] = _pairwise_leaf(buf[q], start, size)
            top += 1
        else:
            top -= 1
            for q in range(ROWS):
                sums[top - 1, q] = sums[top - 1, q] + sums[top, q]
    for q in range(ROWS):
        centres[q] = sums[0, q] / n


@_jit
def row_moments(rows, mean, m2, minimum, maximum, chunk):
    """Moments of each row of ``rows`` (2-D, C-contiguous, float32 or float64) into the
    float64 arrays, ``ROWS`` rows at a time (a last, short pass repeats its last row). A row
    holding NaN gets NaN extremes, as NumPy's ``min`` and ``max`` give, so that it is never
    taken for a constant one.

    ``chunk``: 0, or the length of the pieces einsum sums a row in, one after the other,
    where the block is a single row (NumPy's iterator then drops the row axis and buffers
    the other: ``np.getbufsize()`` values at a time)."""
    count, n = rows.shape
    buf = np.empty((ROWS, n), np.float64)
    centres = np.empty(ROWS, np.float64)
    plan = _pairwise_plan(n)
    sums = np.empty((64, ROWS), np.float64)
    for first in range(0, count, ROWS):
        last = count - 1
        picks = (first, min(first + 1, last), min(first + 2, last), min(first + 3, last))
        lows, highs = _widen(rows, picks, buf, n)
        _pairwise_rows(buf, plan, sums, centres, n)
        c0, c1, c2, c3 = centres[0], centres[1], centres[2], centres[3]
        if chunk <= 0 or n <= chunk:
            squares = _sums_of_squares(buf, 0, n, c0, c1, c2, c3)
        else:
            s0 = s1 = s2 = s3 = 0.0
            for lo in range(0, n, chunk):
                part = _sums_of_squares(buf, lo, min(lo + chunk, n), c0, c1, c2, c3)
                s0, s1, s2, s3 = s0 + part[0], s1 + part[1], s2 + part[2], s3 + part[3]
            squares = (s0, s1, s2, s3)
        for q in range(min(ROWS, count - first)):
            centre = centres[q]
            nan = centre != centre  # NaN, or +Inf and -Inf together
            mean[first + q] = centre
            m2[first + q] = squares[q]
            minimum[first + q] = np.nan if nan else lows[q]
            maximum[first + q] = np.nan if nan else highs[q]


@_jit
def strided_row_moments(rows, mean, m2, minimum, maximum, count):
    """``row_moments`` of the first ``count`` rows of ``rows``, laid out across memory (each
    row's values a row length apart, the rows side by side: a channel axis other than the
    first). NumPy widens such a block in the same layout and sums each row in sequence, from
    zero, one value a step, its square added after the multiply; so does this, all rows at
    each step. ``count`` rather than a slice: a whole transposed weight is Fortran-ordered,
    a compiled layout whose rows are adjacent, and its loops vectorise; a slice of its rows
    has strides known only at run time (1.6× the time, 4095 of 4096 channels)."""
    n = rows.shape[1]
    sums = np.zeros(count, np.float64)
    for i in range(count):
        minimum[i] = maximum[i] = np.float64(rows[i, 0])
    for j in range(n):
        for i in range(count):
            x = np.float64(rows[i, j])
            sums[i] = sums[i] + x
            minimum[i] = min(minimum[i], x)
            maximum[i] = max(maximum[i], x)
    for i in range(count):
        mean[i] = sums[i] / n
        m2[i] = 0.0
        if mean[i] != mean[i]:  # NaN, or +Inf and -Inf together
            minimum[i] = maximum[i] = np.nan
    for j in range(n):
        for i in range(count):
            d = np.float64(rows[i, j]) - mean[i]
            m2[i] = d * d + m2[i]
