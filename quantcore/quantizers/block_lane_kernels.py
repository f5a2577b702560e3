"""The uniform grids of granularity ``group`` quantized ``LANES`` blocks at a time, one block a
lane: the results, bit for bit, of ``block_quantize_kernels.block_quantize`` (and so of the
NumPy reference) for blocks of a multiple of 8 weights up to 128 (one leaf of NumPy's
pairwise sum).

Block by block, each step is a short loop of 32-128 weights with data-dependent branches
between steps (is the block sum short, by how many steps, which rank to find), and the rank
of a 2nd-4th largest residual is a serial chain of min/max through the block: half of
``block_quantize``'s time in blocks of 32. Here every step runs over a tile ``x[i, t]``
(weight ``i`` of block ``t``): a row is one vector operation over the lanes, a sum's eight
partial sums are eight lane vectors, and the rank is the same min/max network run on all
lanes at once; only a block short by more than 4 steps takes the block-by-block rank
(``block_kernels._kth``).

Blocks across a strided axis (``Q > 1``) are read ``LANES`` neighbouring columns at a time,
a row of the tile per row of the tensor; blocks along the contiguous axis block by block into
the tile's columns.
"""

from __future__ import annotations

import numpy as np

from quantcore.quantizers.block_kernels import (
    CODEBOOK,
    ZERO_POINT,
    _inline,
    _jit,
    _kth,
    _next_block,
)
from quantcore.quantizers.transpose_kernel import transpose, transpose8

# Blocks a tile: each row of it is a few vectors of lanes (fewer lanes left the vector loops'
# per-row set-up a large part of each step).
LANES = 64
_L = np.uintp(LANES)


def takes_lanes(mode: int, size: int, strided: bool) -> bool:
    """Whether ``block_quantize_lanes`` serves blocks of ``size`` on grid ``mode``, across a
    strided axis or along the contiguous one. Along it, each block is copied into a lane and
    back: that pays for blocks of up to 64 only (16 and 32: 5.4 -> 3.3 and 3.2 -> 2.7 ns a
    weight, copied an element at a time; with the copies in 8 x 8 transposes, the whole
    group path at 4096 x 4096 on a Zen 5, 64: 3.27-3.38 -> 2.78-2.85, 128: 2.41 -> 2.52)."""
    return (mode != CODEBOOK and size % 8 == 0 and 8 <= size <= 128
            and (strided or size <= 64))  # fmt: skip


@_jit
def block_quantize_lanes(w3, size, count, first, scales, invs, zps, ratios, lo, hi, amax,
                         mode, cmin, cmax, codes, deq, error, inside, best):
    """``block_quantize`` for the uniform grids (``takes_lanes``): blocks ``first ..
    first + scales.shape[1]`` of ``w3``, their codes (block sums kept) and values into
    ``codes`` and ``deq``, per block the squared error, the weights within the clipped range
    (padding included) and the candidate taken (the first of least error)."""
    n = scales.shape[1]
    q_len = w3.shape[2]
    cells = size * LANES  # the tiles: weight i of lane t at i * LANES + t
    x = np.zeros(cells, np.float32)
    qv = np.empty(cells, np.float32)
    res = np.empty(cells, np.float32)
    vt = np.empty(cells, np.float32)
    ct = np.empty(cells, codes.dtype)
    s = np.ones(LANES, np.float32)
    inv = np.ones(LANES, np.float32)
    zp = np.zeros(LANES, np.float32)
    sign = np.ones(LANES, np.float32)
    bound = np.zeros(LANES, np.float32)
    edge = np.zeros(LANES, np.float32)
    clip_lo = np.zeros(LANES, np.float32)
    clip_hi = np.zeros(LANES, np.float32)
    acc32 = np.zeros(8 * LANES, np.float32)
    acc64 = np.zeros(8 * LANES, np.float64)
    top = np.zeros(4 * LANES, np.float32)
    least = np.zeros(LANES, np.float64)
    chosen = np.zeros(LANES, np.int64)
    trial = np.zeros(LANES, np.int64)
    need = np.zeros(LANES, np.int64)
    within = np.zeros(LANES, np.int64)
    score = np.zeros(size, np.float32)
    ranked = np.zeros(2 * size, np.float32)
    lane_p = np.zeros(LANES, np.int64)
    lane_start = np.zeros(LANES, np.int64)
    lane_valid = np.zeros(LANES, np.int64)
    zero_point = mode == ZERO_POINT
    lo_f, hi_f = np.float32(cmin), np.float32(cmax)
    # Flat views (the arrays are C-contiguous): a run of blocks is then indexed at a known
    # stride of one, which the transposing copies need to be vectorised.
    flat, flat_codes, flat_deq = w3.reshape(w3.size), codes.reshape(codes.size), \
        deq.reshape(deq.size)
    pj, q = divmod(first, q_len)
    p, j = divmod(pj, count)
    k = 0
    while k < n:
        # Across a strided axis: neighbouring columns of one row of blocks; along the
        # contiguous axis: the next blocks in order.
        tile = min(LANES, n - k, q_len - q) if q_len > 1 else min(LANES, n - k)
        q0 = q
        for t in range(tile):
            lane_p[t], lane_start[t] = p, j * size
            lane_valid[t] = min(size, w3.shape[1] - j * size)
            p, j, q = _next_block(p, j, q, count, q_len)
        # Along the contiguous axis, a whole tile of full blocks in one row, or in rows that
        # hold whole blocks only (rows of 768 or 1024 in blocks of 32: a tile spans rows), is
        # one run of the flat weight, transposed into the tile without a test per lane.
        run = q_len == 1 and tile == LANES and (
            w3.shape[1] % size == 0
            or (lane_p[tile - 1] == lane_p[0] and lane_valid[tile - 1] == size))
        at = lane_p[0] * w3.shape[1] + lane_start[0]  # the run's first weight in ``flat``
        if q_len > 1:
            _gather_columns(w3, lane_p[0], lane_start[0], q0, lane_valid[0], tile, x)
        elif run:
            _gather_run(flat, at, size, x)
        else:
            _gather_blocks(w3, lane_p, lane_start, lane_valid, tile, x)
        chosen[:] = 0
        if scales.shape[0] > 1:
            for c in range(scales.shape[0]):
                trial[:] = c
                _params(trial, k, tile, scales, invs, zps, s, inv, zp)
                _errors(x, size, zero_point, lo_f, hi_f, s, inv, zp, acc64)
                for t in range(tile):
                    e = _tree(acc64, t)
                    if c == 0 or e < least[t]:
                        chosen[t], least[t] = c, e
        _params(chosen, k, tile, scales, invs, zps, s, inv, zp)
        _rounded(x, size, zero_point, lo_f, hi_f, inv, zp, qv, res, acc32)
        deepest = _shortfall(acc32, tile, size, cmin, cmax, need, sign, bound)
        if deepest > 0:
            _ranks(size, deepest, qv, res, sign, bound, need, top, score, ranked, edge)
            _step(size, qv, res, sign, bound, edge)
        _clip_range(tile, first + k, k, ratios, chosen, lo, hi, amax, zero_point, clip_lo,
                    clip_hi)
        _codes(x, size, zero_point, qv, s, zp, clip_lo, clip_hi, ct, vt, acc64, within)
        for t in range(tile):
            error[k + t] = _tree(acc64, t)
            inside[k + t] = within[t]
            best[k + t] = chosen[t]
        if q_len > 1:
            _scatter_columns(ct, vt, lane_p[0], lane_start[0], q0, lane_valid[0], tile, codes,
                             deq)
        elif run:
            _scatter_run(ct, vt, at, size, flat_codes, flat_deq)
        else:
            _scatter_blocks(ct, vt, lane_p, lane_start, lane_valid, tile, codes, deq)
        k += tile


@_inline
def _params(pick, k, tile, scales, invs, zps, s, inv, zp):
    """Each lane's scale, reciprocal and zero point of its candidate ``pick``; lanes past the
    tile (zeros) a unit scale."""
    for t in range(LANES):
        if t < tile:
            c = pick[t]
            s[t], inv[t], zp[t] = scales[c, k + t], invs[c, k + t], zps[c, k + t]
        else:
            s[t], inv[t], zp[t] = 1.0, 1.0, 0.0


@_inline
def _tree(acc, t):
    """NumPy's pairwise leaf of lane ``t``'s eight partial sums (weight ``i`` into ``i % 8``;
    from +0, which changes no sum that is not zero, nor a sum of squares)."""
    low = (acc[t] + acc[LANES + t]) + (acc[2 * LANES + t] + acc[3 * LANES + t])
    high = (acc[4 * LANES + t] + acc[5 * LANES + t]) + (acc[6 * LANES + t] + acc[7 * LANES + t])
    return low + high


@_inline
def _rounded_code(xv, inv, zp, zero_point, lo_f, hi_f):
    """A weight's code before its block sum is kept (float32): ``rint(x/s) (+ zp)``, clipped,
    as ``block_kernels._uniform_values`` rounds it."""
    v = np.rint(xv * inv)
    if zero_point:
        v = v + zp
    return min(max(v, lo_f), hi_f)


@_inline
def _score(residual, code, sign, bound):
    """A code's rank for a step in direction ``sign``: its signed residual, -inf where it has
    no room (``block_kernels._keep_sums``' score)."""
    return residual * sign if code * sign < bound else np.float32(-np.inf)


@_inline
def _errors(x, size, zero_point, lo_f, hi_f, s, inv, zp, acc64):
    """Each lane's squared error at its parameters, as ``block_kernels._uniform_values``
    measures a candidate, in eight partial sums."""
    acc64[:] = 0.0
    for i in range(size):
        ui, ur = np.uintp(i) * _L, np.uintp(i & 7) * _L
        for t in range(LANES):
            ut = np.uintp(t)
            xv = x[ui + ut]
            v = _rounded_code(xv, inv[ut], zp[ut], zero_point, lo_f, hi_f)
            value = (v - zp[ut]) * s[ut] if zero_point else v * s[ut]
            d = np.float64(value - xv)
            acc64[ur + ut] += d * d


@_inline
def _rounded(x, size, zero_point, lo_f, hi_f, inv, zp, qv, res, acc32):
    """``qv``: the clipped rounded codes (float32); ``res``: their residuals, in eight partial
    sums per lane."""
    acc32[:] = 0.0
    for i in range(size):
        ui, ur = np.uintp(i) * _L, np.uintp(i & 7) * _L
        for t in range(LANES):
            ut = np.uintp(t)
            xv = x[ui + ut]
            v = _rounded_code(xv, inv[ut], zp[ut], zero_point, lo_f, hi_f)
            qv[ui + ut] = v
            off = zp[ut] if zero_point else np.float32(0.0)
            rr = xv * inv[ut] + off - v
            res[ui + ut] = rr
            acc32[ur + ut] += rr


@_inline
def _shortfall(acc32, tile, size, cmin, cmax, need, sign, bound):
    """Per lane, the steps its block sum is short (``need``, 0 past the tile), their direction
    and the bound a code must be under (signed) to take one; returns the most."""
    deepest = 0
    for t in range(LANES):
        short = np.rint(_tree(acc32, t)) if t < tile else np.float32(0.0)
        need[t] = min(int(abs(short)), size)
        deepest = max(deepest, need[t])
        up = short > 0
        sign[t] = 1.0 if up else -1.0
        bound[t] = (np.float32(cmax) if up else np.float32(cmin)) * sign[t]
    return deepest


@_inline
def _ranks(size, deepest, qv, res, sign, bound, need, top, score, ranked, edge):
    """Each lane's ``need``-th largest score counting repeats (a code without room scores
    -inf), +inf where none is needed: the 4 largest by ``block_kernels._kth_few``'s min/max
    network on all lanes at once, more by ``_kth`` on the lane's block alone."""
    lowest = np.float32(-np.inf)
    top[:] = lowest
    l1, l2, l3 = _L, np.uintp(2) * _L, np.uintp(3) * _L
    for i in range(size):
        ui = np.uintp(i) * _L
        for t in range(LANES):
            ut = np.uintp(t)
            sg = sign[ut]
            v = _score(res[ui + ut], qv[ui + ut], sg, bound[ut])
            m1, m2, m3, m4 = top[ut], top[l1 + ut], top[l2 + ut], top[l3 + ut]
            if deepest > 1:
                top[l3 + ut] = max(m4, min(m3, v))
                top[l2 + ut] = max(m3, min(m2, v))
                top[l1 + ut] = max(m2, min(m1, v))
            top[ut] = max(m1, v)
    for t in range(LANES):
        wanted = need[t]
        if wanted == 0:
            edge[t] = np.float32(np.inf)
        elif wanted <= 4:
            edge[t] = top[(wanted - 1) * LANES + t]
        else:
            sg = sign[t]
            for i in range(size):
                u = i * LANES + t
                score[i] = _score(res[u], qv[u], sg, bound[t])
            edge[t] = _kth(score, size, wanted, ranked)


@_inline
def _step(size, qv, res, sign, bound, edge):
    """One step for each code with room whose score reaches its lane's rank."""
    lowest, zero = np.float32(-np.inf), np.float32(0.0)
    for i in range(size):
        ui = np.uintp(i) * _L
        for t in range(LANES):
            ut = np.uintp(t)
            sg = sign[ut]
            v = _score(res[ui + ut], qv[ui + ut], sg, bound[ut])
            qv[ui + ut] += sg if (v > lowest) & (v >= edge[ut]) else zero


@_inline
def _clip_range(tile, b0, k, ratios, chosen, lo, hi, amax, zero_point, clip_lo, clip_hi):
    """Each lane's clipped range at its candidate's ratio (empty past the tile)."""
    for t in range(LANES):
        if t < tile:
            b = b0 + t
            r = ratios[chosen[t], k + t]
            if zero_point:
                clip_lo[t], clip_hi[t] = lo[b] * r, hi[b] * r
            else:
                clip_hi[t] = amax[b] * r
                clip_lo[t] = -clip_hi[t]
        else:
            clip_lo[t], clip_hi[t] = 0.0, 0.0


@_inline
def _codes(x, size, zero_point, qv, s, zp, clip_lo, clip_hi, ct, vt, acc64, within):
    """The codes and their values (from the stored code, as ``decode`` computes them); per
    lane the squared error in eight partial sums and the weights within the clipped range."""
    acc64[:] = 0.0
    within[:] = 0
    for i in range(size):
        ui, ur = np.uintp(i) * _L, np.uintp(i & 7) * _L
        for t in range(LANES):
            ut = np.uintp(t)
            code = np.int32(qv[ui + ut])
            ct[ui + ut] = code
            off = zp[ut] if zero_point else np.float32(0.0)
            value = (np.float32(code) - off) * s[ut]
            vt[ui + ut] = value
            xv = x[ui + ut]
            d = np.float64(value - xv)
            acc64[ur + ut] += d * d
            within[ut] += (xv >= clip_lo[ut]) & (xv <= clip_hi[ut])


@_inline
def _gather_columns(w3, p, start, q, valid, tile, x):
    """The ``tile`` blocks at ``(p, start, q .. q + tile)`` into the tile's lanes, a row of
    the tensor at a time; zeros past the axis' end and past the tile."""
    up, us, uq = np.uintp(p), np.uintp(start), np.uintp(q)
    zero = np.float32(0.0)
    for i in range(valid):
        ui = np.uintp(i) * _L
        for t in range(tile):
            x[ui + np.uintp(t)] = w3[up, us + np.uintp(i), uq + np.uintp(t)]
        for t in range(tile, LANES):
            x[ui + np.uintp(t)] = zero
    for u in range(valid * LANES, x.size):
        x[u] = zero


@_inline
def _scatter_columns(ct, vt, p, start, q, valid, tile, codes, deq):
    """``_gather_columns``' inverse for the codes and values."""
    up, us, uq = np.uintp(p), np.uintp(start), np.uintp(q)
    for i in range(valid):
        ui = np.uintp(i) * _L
        for t in range(tile):
            codes[up, us + np.uintp(i), uq + np.uintp(t)] = ct[ui + np.uintp(t)]
            deq[up, us + np.uintp(i), uq + np.uintp(t)] = vt[ui + np.uintp(t)]


@_inline
def _gather_run(flat, at, size, x):
    """The ``LANES`` full blocks of ``size`` from ``flat[at]`` on (``Q = 1``, one row), block
    ``t`` into lane ``t``, in vector transposes."""
    transpose(flat, at, size, x, 0, LANES, LANES, size)


@_inline
def _scatter_run(ct, vt, at, size, flat_codes, flat_deq):
    """``_gather_run``'s inverse for the codes and values, both moved block by block (one
    ``transpose`` of each after the other took 4% more of the lane kernel's time)."""
    base, usize = np.uintp(at), np.uintp(size)
    for i0 in range(np.uintp(0), usize, np.uintp(8)):
        for t0 in range(np.uintp(0), _L, np.uintp(8)):
            out = base + t0 * usize + i0
            transpose8(ct, i0 * _L + t0, _L, flat_codes, out, usize)  # type: ignore[call-arg]
            transpose8(vt, i0 * _L + t0, _L, flat_deq, out, usize)


@_inline
def _gather_blocks(w3, lane_p, lane_start, lane_valid, tile, x):
    """Blocks along the contiguous axis (``Q = 1``) into the tile's lanes, one at a time;
    zeros past each block's end and past the tile."""
    size = x.size // LANES
    zero = np.float32(0.0)
    for t in range(LANES):
        ut = np.uintp(t)
        valid = lane_valid[t] if t < tile else 0
        up, us = np.uintp(lane_p[t]), np.uintp(lane_start[t])
        for i in range(valid):
            x[np.uintp(i) * _L + ut] = w3[up, us + np.uintp(i), 0]
        for i in range(valid, size):
            x[np.uintp(i) * _L + ut] = zero


@_inline
def _scatter_blocks(ct, vt, lane_p, lane_start, lane_valid, tile, codes, deq):
    """``_gather_blocks``' inverse for the codes and values."""
    for t in range(tile):
        ut = np.uintp(t)
        up, us = np.uintp(lane_p[t]), np.uintp(lane_start[t])
        for i in range(lane_valid[t]):
            codes[up, us + np.uintp(i), 0] = ct[np.uintp(i) * _L + ut]
            deq[up, us + np.uintp(i), 0] = vt[np.uintp(i) * _L + ut]
