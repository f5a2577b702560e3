"""Per-block statistics of the group path (``group_compiled``): each block's extremes and
sum of squares, bit for bit the NumPy path's, before the blocks are quantized."""

from __future__ import annotations

import numpy as np

from quantcore.quantizers.block_kernels import (
    _extremes,
    _gather_at,
    _inline,
    _jit,
    _next_block,
    _sum,
)
from quantcore.quantizers.block_lane_kernels import LANES, _tree


@_jit
def block_stats(w3, size, count, hi, lo, sumsq):
    """Per block: ``max(max w, 0)``, ``min(min w, 0)`` (float32) and ``Σ w²`` (float64).
    Whole blocks along the last axis of at most 128 values, a multiple of 8, are read in
    place (``_block_moments``): copied out first, the copies cost as much as the sums
    (16M weights in blocks of 32: 23 ms against 12). Such blocks across a strided axis are
    read in place too, ``LANES`` neighbouring columns at a time (``_tile_moments``): block by
    block, each weight on a page of its own, they took 3.4-3.8 ns a weight in blocks of 128
    across a 4096-wide axis (MatMul's layout)."""
    q_len = w3.shape[2]
    leaf = size % 8 == 0 and size <= 128  # NumPy's sum of the block is one pairwise leaf
    whole = w3.shape[1] // size if leaf and q_len == 1 else 0
    tiled = leaf and q_len > 1
    xb = np.empty(size, np.float32)
    sq = np.empty(size, np.float64)
    sums = np.empty(8 * LANES, np.float64)
    top = np.empty(LANES, np.float32)
    bottom = np.empty(LANES, np.float32)
    p, j, q = 0, 0, 0
    b = 0
    while b < hi.size:
        tile = 1
        if j < whole:
            hi[b], lo[b], sumsq[b] = _block_moments(w3, p, j * size, size)
        elif tiled:
            tile = min(LANES, q_len - q, hi.size - b)
            _tile_moments(w3, p, j * size, q, size, tile, sums, top, bottom)
            for t in range(tile):
                hi[b + t], lo[b + t] = top[t], bottom[t]
                sumsq[b + t] = _tree(sums, t)
        else:
            _gather_at(w3, p, j * size, q, size, xb)
            for i in range(size):
                sq[i] = np.float64(xb[i]) * np.float64(xb[i])
            hi[b], lo[b] = _extremes(xb, size, np.float32(0.0))
            sumsq[b] = _sum(sq, 0, size)
        for _ in range(tile):
            p, j, q = _next_block(p, j, q, count, q_len)
        b += tile


@_inline
def _tile_moments(w3, p, first, q, size, tile, sums, top, bottom):
    """``_block_moments`` of the ``tile`` blocks at ``(p, first, q .. q + tile)``, read row by
    row along ``q``, one block a lane: each block's eight partial sums of squares in
    ``sums[r * LANES + t]`` (weight ``i`` into sum ``i % 8``, in order, as NumPy's pairwise
    leaf adds them), its extremes in ``top`` and ``bottom``. Past the axis' end the block is
    zeros, which change no sum or extreme from +0. Flat arrays and unsigned indices, so each
    row is a few vector operations (16 columns in two-dimensional arrays took 1.1 ns a weight
    in blocks of 128 across a 4096-wide axis, these 0.65)."""
    zero = np.float32(0.0)
    top[:] = zero
    bottom[:] = zero
    sums[:] = 0.0
    lanes = np.uintp(LANES)
    valid = min(size, w3.shape[1] - first)
    up, uf, uq = np.uintp(p), np.uintp(first), np.uintp(q)
    for i in range(valid):
        ur = np.uintp(i & 7) * lanes
        ui = uf + np.uintp(i)
        for t in range(tile):
            ut = np.uintp(t)
            x = w3[up, ui, uq + ut]
            top[ut] = max(top[ut], x)
            bottom[ut] = min(bottom[ut], x)
            sums[ur + ut] += np.float64(x) * np.float64(x)


@_inline
def _block_moments(w3, p, first, size):
    """``block_stats`` of the block at ``w3[p, first : first + size, 0]``: ``_extremes``'
    eight chains and the leaf of NumPy's pairwise sum of the squares, in one pass (its
    accumulators start from a square where these start from +0: the same, a square is never
    -0)."""
    zero = np.float32(0.0)
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = zero
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = zero
    r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = 0.0
    for i in range(first, first + size, 8):
        x0, x1, x2, x3 = w3[p, i, 0], w3[p, i + 1, 0], w3[p, i + 2, 0], w3[p, i + 3, 0]
        x4, x5, x6, x7 = w3[p, i + 4, 0], w3[p, i + 5, 0], w3[p, i + 6, 0], w3[p, i + 7, 0]
        t0, b0 = max(t0, x0), min(b0, x0)
        t1, b1 = max(t1, x1), min(b1, x1)
        t2, b2 = max(t2, x2), min(b2, x2)
        t3, b3 = max(t3, x3), min(b3, x3)
        t4, b4 = max(t4, x4), min(b4, x4)
        t5, b5 = max(t5, x5), min(b5, x5)
        t6, b6 = max(t6, x6), min(b6, x6)
        t7, b7 = max(t7, x7), min(b7, x7)
        r0 += np.float64(x0) * np.float64(x0)
        r1 += np.float64(x1) * np.float64(x1)
        r2 += np.float64(x2) * np.float64(x2)
        r3 += np.float64(x3) * np.float64(x3)
        r4 += np.float64(x4) * np.float64(x4)
        r5 += np.float64(x5) * np.float64(x5)
        r6 += np.float64(x6) * np.float64(x6)
        r7 += np.float64(x7) * np.float64(x7)
    top = max(max(max(t0, t1), max(t2, t3)), max(max(t4, t5), max(t6, t7)))
    bottom = min(min(min(b0, b1), min(b2, b3)), min(min(b4, b5), min(b6, b7)))
    return top, bottom, ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
