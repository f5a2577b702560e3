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
from quantcore.quantizers.block_lane_kernels import LANES, _gather_run, _tree


@_jit
def block_stats(w3, size, count, hi, lo, sumsq):
    """Per block: ``max(max w, 0)``, ``min(min w, 0)`` (float32) and ``Σ w²`` (float64).
    Whole blocks along the last axis of at most 128 values, a multiple of 8, are read in
    place (``_block_moments``): copied out first, the copies cost as much as the sums
    (16M weights in blocks of 32: 23 ms against 12). Such blocks across a strided axis are
    read in place too, ``LANES`` neighbouring columns at a time (``_tile_moments``): block by
    block, each weight on a page of its own, they took 3.4-3.8 ns a weight in blocks of 128
    across a 4096-wide axis (MatMul's layout). Along the contiguous axis, ``LANES`` whole
    blocks that follow one another in memory are moved into lanes by vector transposes and
    summed as those columns are (``_lane_moments``): one at a time in eight lanes, blocks of
    32 took 0.75 ns a weight."""
    q_len = w3.shape[2]
    leaf = size % 8 == 0 and size <= 128  # NumPy's sum of the block is one pairwise leaf
    whole = w3.shape[1] // size if leaf and q_len == 1 else 0
    tiled = leaf and q_len > 1
    xb = np.empty(size, np.float32)
    # Whole blocks are read as runs of the flat array (a view: ``compiled_blocks`` passes a
    # C-ordered weight), each weight of a run into one of eight lanes.
    flat = w3.ravel() if whole else np.empty(0, w3.dtype)
    top8 = np.empty(8, np.float32)
    bottom8 = np.empty(8, np.float32)
    sums8 = np.empty(8, np.float64)
    sq = np.empty(size, np.float64)
    sums = np.empty(8 * LANES, np.float64)
    top = np.empty(LANES, np.float32)
    bottom = np.empty(LANES, np.float32)
    # Rows of whole blocks only: any ``LANES`` blocks in a row of the flat array follow one
    # another; otherwise only those within one row do.
    across_rows = whole > 0 and w3.shape[1] % size == 0
    x = np.empty(size * LANES if whole else 0, np.float32)
    p, j, q = 0, 0, 0
    b = 0
    while b < hi.size:
        tile = 1
        if j < whole:
            start = np.uintp(p) * np.uintp(w3.shape[1]) + np.uintp(j * size)
            if b + LANES <= hi.size and (across_rows or j + LANES <= whole):
                tile = LANES
                _gather_run(flat, start, size, x)
                _lane_moments(x, size, sums, top, bottom)
                for t in range(LANES):
                    hi[b + t], lo[b + t] = top[t], bottom[t]
                    sumsq[b + t] = _tree(sums, t)
            else:
                hi[b], lo[b], sumsq[b] = _block_moments(flat, start, size, top8, bottom8,
                                                        sums8)  # fmt: skip
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
def _lane_moments(x, size, sums, top, bottom):
    """``_tile_moments`` of the ``LANES`` blocks of ``size`` in the tile ``x`` (weight ``i`` of
    block ``t`` at ``x[i * LANES + t]``)."""
    zero = np.float32(0.0)
    top[:] = zero
    bottom[:] = zero
    sums[:] = 0.0
    lanes = np.uintp(LANES)
    for i in range(size):
        ur, ui = np.uintp(i & 7) * lanes, np.uintp(i) * lanes
        for t in range(LANES):
            ut = np.uintp(t)
            v = x[ui + ut]
            top[ut] = max(top[ut], v)
            bottom[ut] = min(bottom[ut], v)
            sums[ur + ut] += np.float64(v) * np.float64(v)


@_inline
def _block_moments(flat, first, size, top8, bottom8, sums8):
    """``block_stats`` of the block ``flat[first : first + size]``: ``_extremes``' eight
    chains and the leaf of NumPy's pairwise sum of the squares (weight ``i`` into lane
    ``i % 8``), in one pass; its accumulators start from a square where these start from +0:
    the same, a square is never -0. Lanes in small arrays, read as a contiguous run: as eight
    scalar chains over the three-dimensional weight the loop stayed scalar (2.2 ns a weight
    in blocks of 128, these 1.6)."""
    zero = np.float32(0.0)
    for r in range(8):
        top8[r], bottom8[r], sums8[r] = zero, zero, 0.0
    for k in range(first, first + np.uintp(size), np.uintp(8)):
        for r in range(np.uintp(8)):
            x = flat[k + r]
            top8[r] = max(top8[r], x)
            bottom8[r] = min(bottom8[r], x)
            sums8[r] += np.float64(x) * np.float64(x)
    t, b, r8 = top8, bottom8, sums8
    top = max(max(max(t[0], t[1]), max(t[2], t[3])), max(max(t[4], t[5]), max(t[6], t[7])))
    bottom = min(min(min(b[0], b[1]), min(b[2], b[3])), min(min(b[4], b[5]), min(b[6], b[7])))
    return top, bottom, ((r8[0] + r8[1]) + (r8[2] + r8[3])) + ((r8[4] + r8[5]) + (r8[6] + r8[7]))
