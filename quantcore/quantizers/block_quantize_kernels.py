"""The compiled loop of granularity ``group``: each block's candidate of least error, its codes
with the block sum kept, its values and its error (``quantcore.compress.group_compiled``), from
the per-block pieces of ``quantcore.quantizers.block_kernels``.
"""

from __future__ import annotations

import math

import numpy as np

from quantcore.quantizers.block_kernels import (
    CODEBOOK,
    TILE,
    ZERO_POINT,
    _codebook_values,
    _gather_at,
    _gather_tile,
    _jit,
    _keep_sums,
    _next_block,
    _scatter_tile,
    _sum,
    _table_values,
    _uniform_values,
)
from quantcore.quantizers.kernels import _table_codes, _table_levels

_HALF_MAX_EDGE = 65520.0  # float16 rounds this and above to inf (65504 is the largest finite)
_HALF_NORMAL = 2.0**-14  # the smallest normal float16; below, a step of 2^-24


@_jit
def half_value(x):
    """The float16 that ``x`` (a positive float32, as float64) rounds to, as a float64: NumPy's
    ``astype(np.float16)``, to nearest, ties to even, subnormals kept, inf past the range."""
    if x >= _HALF_MAX_EDGE:
        return np.inf
    if x < _HALF_NORMAL:
        step = 2.0**-24
    else:
        _, e = math.frexp(x)  # x = m·2^e, 0.5 ≤ m < 1: 11 significant bits, steps of 2^(e-11)
        step = math.ldexp(1.0, e - 11)
    return np.rint(x / step) * step


@_jit
def _refit(xb, size, cb, levels, vb, sq, lv, vn, e):
    """A codebook block's float16 scale of least squared error for its codes ``cb``
    (``⟨x, ℓ⟩ / ⟨ℓ, ℓ⟩``), as float32, and its error; ``(0, e)`` where it does not lower
    the error ``e``. Its values go to ``vb`` when it does. The reference's order of sums
    (``group_numpy._refit``)."""
    for i in range(size):
        vn[i] = levels[cb[i]]
    for i in range(size):
        level = np.float64(vn[i])
        sq[i] = level * np.float64(xb[i])
        lv[i] = level * level
    num = _sum(sq, 0, size)
    den = _sum(lv, 0, size)
    if not den > 0.0:
        return np.float32(0.0), e
    fitted = half_value(np.float64(np.float32(num / den)))
    if not (fitted > 0.0 and fitted < np.inf):
        return np.float32(0.0), e
    s = np.float32(fitted)
    for i in range(size):
        value = vn[i] * s
        vn[i] = value
        d = np.float64(value - xb[i])
        sq[i] = d * d
    refitted = _sum(sq, 0, size)
    if not refitted < e:
        return np.float32(0.0), e
    for i in range(size):
        vb[i] = vn[i]
    return s, refitted


@_jit
def block_quantize(w3, size, count, first, scales, invs, zps, ratios, lo, hi, amax, mode,
                   cmin, cmax, levels, kind, limit, ratio, max_index, signbit, edges, table,
                   lut, refit, codes, deq, error, inside, best, refitted):
    """Blocks ``first .. first + scales.shape[1]`` of ``w3``: per block the candidate (row of
    ``scales``/``invs``/``zps``/``ratios``) of least squared error (the first on ties), its
    codes (uniform: block sums kept) into ``codes`` and values into ``deq`` (both shaped like
    ``w3``), and per block its squared error, its weights within the clipped range (padding
    included, as in the reference) and the candidate taken; with ``refit`` (a codebook) the
    block's scale refitted to its codes where that lowers its error (``refitted``, float32;
    0 elsewhere, as the caller fills it). Blocks along a strided axis are
    read and written ``TILE`` at a time (``_gather_tile``), each then quantized as alone."""
    candidates, n = scales.shape
    q_len = w3.shape[2]
    xb = np.empty(size, np.float32)
    qb = np.empty(size, np.float32)
    vb = np.empty(size, np.float32)
    rb = np.empty(size, np.float32)
    score = np.empty(size, np.float32)
    sq = np.empty(size, np.float64)
    lv = np.empty(size, np.float64)
    vn = np.empty(size, np.float32)
    cb = np.empty(size, codes.dtype)
    cb_best = np.empty(size, codes.dtype)
    vb_best = np.empty(size, np.float32)
    top = np.empty(2 * size, np.float32)
    tiled = q_len > 1
    width = TILE if tiled else 1
    xt = np.empty((width, size), np.float32)
    ct = np.empty((width, size), codes.dtype)
    vt = np.empty((width, size), np.float32)
    # A table family's codes and levels by index in the table (``_codebook_values``).
    stored = _table_codes(kind if mode == CODEBOOK else -1, table, cb)
    level_at = _table_levels(stored, levels, stored.size)
    tabled = stored.size > 0
    # A codebook's largest level: a block's largest weight beyond a candidate's reach costs
    # at least its distance to it, so a candidate whose bound exceeds the least error so far
    # is skipped, never chosen (the bound is widened past float32's rounding).
    outer = 0.0
    for i in range(levels.size):
        outer = max(outer, abs(np.float64(levels[i])))
    outer *= 1.0 + 1e-6
    pj, q = divmod(first, q_len)
    p, j = divmod(pj, count)
    k = 0
    while k < n:
        start = j * size
        tile = min(width, q_len - q, n - k)
        if tiled:
            valid = _gather_tile(w3, p, start, q, size, tile, xt)
        for t in range(tile):
            if tiled:
                for i in range(size):
                    xb[i] = xt[t, i]
            else:
                valid = _gather_at(w3, p, start, q, size, xb)
            b = first + k
            chosen = 0
            least = 0.0
            if candidates > 1:
                for c in range(candidates):
                    if mode == CODEBOOK and c > 0:
                        gap = np.float64(amax[b]) - outer * np.float64(scales[c, k])
                        if gap > 0.0 and gap * gap * (1.0 - 1e-5) > least:
                            continue
                    if tabled:
                        e = _table_values(xb, size, scales[c, k], invs[c, k], cb, vb, sq,
                                          signbit, edges, lut, stored, level_at)  # fmt: skip
                    elif mode == CODEBOOK:
                        e = _codebook_values(xb, size, scales[c, k], invs[c, k], rb, cb, levels,
                                             vb, sq, kind, limit, ratio, max_index, signbit,
                                             edges, table, lut)  # fmt: skip
                    else:
                        e = _uniform_values(xb, size, scales[c, k], invs[c, k], zps[c, k], mode,
                                            cmin, cmax, qb, sq, True, rb)  # fmt: skip
                    if c == 0 or e < least:
                        chosen, least = c, e
                        if mode == CODEBOOK:  # the best codes so far, kept, not coded again
                            for i in range(size):
                                cb_best[i] = cb[i]
                                vb_best[i] = vb[i]
            s, inv, zp = scales[chosen, k], invs[chosen, k], zps[chosen, k]
            if mode == CODEBOOK and candidates > 1:
                for i in range(size):
                    cb[i] = cb_best[i]
                    vb[i] = vb_best[i]
                e = least
            elif tabled:
                e = _table_values(xb, size, s, inv, cb, vb, sq, signbit, edges, lut, stored,
                                  level_at)  # fmt: skip
            elif mode == CODEBOOK:
                e = _codebook_values(xb, size, s, inv, rb, cb, levels, vb, sq, kind, limit,
                                     ratio, max_index, signbit, edges, table, lut)  # fmt: skip
            else:
                _uniform_values(xb, size, s, inv, zp, mode, cmin, cmax, qb, sq, False, rb)
                _keep_sums(size, cmin, cmax, qb, rb, score, top)
                off = zp if mode == ZERO_POINT else np.float32(0.0)
                for i in range(size):
                    # int32: vectorised where int64 is not (see kernels._midrise).
                    code = np.int32(qb[i])
                    cb[i] = code
                    # From the stored code, as ``decode`` computes it (a code 0 is +0, never -0).
                    value = (np.float32(code) - off) * s
                    vb[i] = value
                    d = np.float64(value - xb[i])
                    sq[i] = d * d
                e = _sum(sq, 0, size)
            if refit:
                refitted[k], e = _refit(xb, size, cb, levels, vb, sq, lv, vn, e)
            r = ratios[chosen, k]
            if mode == ZERO_POINT:
                clip_lo, clip_hi = lo[b] * r, hi[b] * r
            else:
                clip_hi = amax[b] * r
                clip_lo = -clip_hi
            within = 0
            for i in range(size):
                within += (xb[i] >= clip_lo) & (xb[i] <= clip_hi)
            if tiled:
                for i in range(size):
                    ct[t, i] = cb[i]
                    vt[t, i] = vb[i]
            else:
                up, us, uq = np.uintp(p), np.uintp(start), np.uintp(q)
                for i in range(valid):  # a loop with unsigned indices, as in ``_gather_at``
                    codes[up, us + np.uintp(i), uq] = cb[i]
                    deq[up, us + np.uintp(i), uq] = vb[i]
            error[k] = e
            inside[k] = within
            best[k] = chosen
            k += 1
        if tiled:
            _scatter_tile(ct, vt, p, start, q, valid, tile, codes, deq)
        for _ in range(tile):
            p, j, q = _next_block(p, j, q, count, q_len)
