"""Compiled kernels of granularity ``group``: every block's statistics, its clip search, its
codes with block sums kept, its dequantized weights and its error, one block at a time (the
loop over the blocks is ``block_quantize_kernels``).

The tensor is seen as ``w3`` of shape ``(P, L, Q)``: blocks of ``B`` run along ``L`` (the
block axis), one per ``(p, j, q)`` with ``j < ceil(L / B)``, numbered ``(p·count + j)·Q + q``.
A block is gathered into a buffer of ``B`` weights, zeros past ``L`` (the NumPy reference,
``quantcore.compress.group_numpy``, pads with zeros the same way), so that every sum runs
over the same ``B`` numbers in the same order as the reference's: ``pairwise`` is NumPy's
pairwise summation (eight accumulators, halves above 128), which is what ``ndarray.sum``
does along a contiguous axis. Each per-weight operation is the reference's IEEE operation in
the same precision, so codes, scales, errors and counts agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from quantcore.jit import njit
from quantcore.quantizers.kernels import _table_index, encode_values

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
_inline = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")

SYMMETRIC, ZERO_POINT, CODEBOOK = 0, 1, 2


@_inline
def _pairwise_leaf(a, lo, n):
    """NumPy's pairwise sum of ``a[lo:lo+n]`` for ``1 ≤ n ≤ 128``."""
    if n < 8:  # NumPy starts from -0.0, and -0.0 + a[lo] is a[lo]
        res = a[lo]
        for i in range(1, n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_inline
def _sum(a, lo, n):
    """``pairwise``, its single leaf inlined where the run has at most 128 values."""
    return _pairwise_leaf(a, lo, n) if n <= 128 else pairwise(a, lo, n)


@_jit
def pairwise(a, lo, n):
    """NumPy's pairwise sum of ``a[lo:lo+n]`` (same dtype, same order, same roundings):
    leaves of at most 128, longer runs split at half rounded down to a multiple of 8 and
    the halves' sums added. Written without recursion (numba's cache does not keep
    recursive functions reliably): an explicit stack of pending runs and partial sums."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n)
    starts = np.empty(64, np.int64)
    sizes = np.empty(64, np.int64)
    halves = np.zeros(64, np.int64)  # 0: to split, 1: left done, 2: both done
    partial = np.empty(64, a.dtype)
    depth = 0
    starts[0], sizes[0], halves[0] = lo, n, 0
    result = a[lo]
    while depth >= 0:
        size = sizes[depth]
        if size <= 128:
            result = _pairwise_leaf(a, starts[depth], size)
            depth -= 1
        elif halves[depth] == 0:
            half = size // 2
            half -= half % 8
            halves[depth] = 1
            starts[depth + 1], sizes[depth + 1], halves[depth + 1] = starts[depth], half, 0
            depth += 1
            continue
        elif halves[depth] == 1:
            half = size // 2
            half -= half % 8
            partial[depth] = result
            halves[depth] = 2
            starts[depth + 1] = starts[depth] + half
            sizes[depth + 1], halves[depth + 1] = size - half, 0
            depth += 1
            continue
        else:
            result = partial[depth] + result
            depth -= 1
    return result


@_inline
def _gather(w3, block, size, count, xb):
    """Block ``block`` into ``xb`` (zeros past the axis' end); returns its (p, first l, q)."""
    q_len = w3.shape[2]
    pj, q = divmod(block, q_len)
    p, j = divmod(pj, count)
    first = j * size
    _gather_at(w3, p, first, q, size, xb)
    return p, first, q


@_inline
def _gather_at(w3, p, first, q, size, xb):
    """The block at ``(p, first, q)`` into ``xb``, zeros past the axis' end. A loop, not a
    slice: each slice of a block is a view whose reference count is taken and dropped
    (two atomic operations), which at 32 weights cost more than the copy. Unsigned indices:
    with signed ones numba adds a negative-index test to every access, which kept this copy
    and the codes' copy out scalar, half of ``block_quantize``'s time (4.5 -> 2.9 ns a
    weight in blocks of 32, 3.4 -> 1.7 in blocks of 128)."""
    length = w3.shape[1]
    valid = min(size, length - first)
    up, uf, uq = np.uintp(p), np.uintp(first), np.uintp(q)
    for i in range(valid):
        xb[i] = w3[up, uf + np.uintp(i), uq]
    for i in range(valid, size):
        xb[i] = np.float32(0.0)
    return valid


@_inline
def _next_block(p, j, q, count, q_len):
    """The position of the block after ``(p, j, q)`` in block order."""
    q += 1
    if q == q_len:
        q = 0
        j += 1
        if j == count:
            j = 0
            p += 1
    return p, j, q


@_jit
def gather_blocks(w3, size, count, first, out):
    """Blocks ``first .. first + len(out)`` into the rows of ``out`` (zero-padded)."""
    for k in range(out.shape[0]):
        _gather(w3, first + k, size, count, out[k])


@_inline
def _extremes(a, n, start):
    """``(max, min)`` of ``start`` and ``a[:n]``, each ``start`` when no value passes it
    (so a zero is +0 as the serial loop from +0 gives). Eight independent chains where ``n``
    is a multiple of 8: one chain is a serial dependency of the max's latency per value."""
    if n % 8:
        top, bottom = start, start
        for i in range(n):
            top = max(top, a[i])
            bottom = min(bottom, a[i])
        return top, bottom
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = start
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = start
    for i in range(0, n, 8):
        t0, b0 = max(t0, a[i]), min(b0, a[i])
        t1, b1 = max(t1, a[i + 1]), min(b1, a[i + 1])
        t2, b2 = max(t2, a[i + 2]), min(b2, a[i + 2])
        t3, b3 = max(t3, a[i + 3]), min(b3, a[i + 3])
        t4, b4 = max(t4, a[i + 4]), min(b4, a[i + 4])
        t5, b5 = max(t5, a[i + 5]), min(b5, a[i + 5])
        t6, b6 = max(t6, a[i + 6]), min(b6, a[i + 6])
        t7, b7 = max(t7, a[i + 7]), min(b7, a[i + 7])
    top = max(max(max(t0, t1), max(t2, t3)), max(max(t4, t5), max(t6, t7)))
    bottom = min(min(min(b0, b1), min(b2, b3)), min(min(b4, b5), min(b6, b7)))
    return top, bottom


@_inline
def _uniform_values(xb, size, s, inv, zp, mode, cmin, cmax, qb, sq, error, rb):
    """``qb`` = clipped ``rint(x/s) (+ zp)``; with ``error``, returns the Σ of squared errors
    of its values, else fills ``rb`` with the residuals ``x/s (+ zp) - q`` that keeping the
    block sum ranks (and returns 0). The zero point and the clip bounds are float32, as
    NumPy's ``q += zp`` makes them."""
    lo_f, hi_f = np.float32(cmin), np.float32(cmax)
    off = zp if mode == ZERO_POINT else np.float32(0.0)
    for i in range(size):
        v = np.rint(xb[i] * inv)
        if mode == ZERO_POINT:
            v = v + zp
        v = min(max(v, lo_f), hi_f)
        qb[i] = v
        if error:
            value = (v - zp) * s if mode == ZERO_POINT else v * s
            d = np.float64(value - xb[i])
            sq[i] = d * d
        else:
            rb[i] = xb[i] * inv + off - v
    return _sum(sq, 0, size) if error else 0.0


@_inline
def _table_values(xb, size, s, inv, cb, vb, sq, signbit, edges, lut, stored, level_at):
    """``_codebook_values`` of a table family, code and level read at the value's index in
    the table (``stored``: its codes, ``level_at``: their levels), as ``kernels.stream_chunk``
    reads them: the encoder's codes, then each level by its code, took 1.1x the time."""
    for i in range(size):
        m = _table_index(xb[i] * inv, signbit, edges, lut)
        cb[i] = stored[m]
        value = level_at[m] * s
        vb[i] = value
        d = np.float64(value - xb[i])
        sq[i] = d * d
    return _sum(sq, 0, size)


@_inline
def _codebook_values(xb, size, s, inv, tb, cb, levels, vb, sq, kind, limit, ratio,
                     max_index, signbit, edges, table, lut):
    for i in range(size):
        tb[i] = xb[i] * inv
    # The buffers hold one block: passed whole, not as slices (see ``_gather_at``).
    encode_values(tb, cb, kind, limit, ratio, max_index, signbit, edges, table, lut)
    for i in range(size):
        value = levels[cb[i]] * s
        vb[i] = value
        d = np.float64(value - xb[i])
        sq[i] = d * d
    return _sum(sq, 0, size)


# Passing scores ranked against each other (m² comparisons) up to this many, else sorted in.
_RANK_ALL = 16


@_jit
def _kth_largest(score, size, k, top):
    """The ``k``-th largest of ``score[:size]`` counting repeats (``1 ≤ k ≤ size``)."""
    return _kth(score, size, k, top)


@_inline
def _kth_few(score, size, k):
    """``_kth`` for ``2 ≤ k ≤ 4``: the k largest held in registers, each score put in by a
    min/max network, one pass without branches (a block's sum is short by 2-4 steps in about
    a third of blocks of 32: 0.9-1.2 of 4 ns a weight that keeping sums cost on a Zen 1)."""
    m1 = m2 = m3 = m4 = np.float32(-np.inf)
    if k == 2:  # a loop for each k: a test of k inside one costs a third of the gain
        for i in range(size):
            m2, m1 = max(m2, min(m1, score[i])), max(m1, score[i])
        return m2
    if k == 3:
        for i in range(size):
            v = score[i]
            m3, m2, m1 = max(m3, min(m2, v)), max(m2, min(m1, v)), max(m1, v)
        return m3
    for i in range(size):
        v = score[i]
        m4, m3 = max(m4, min(m3, v)), max(m3, min(m2, v))
        m2, m1 = max(m2, min(m1, v)), max(m1, v)
    return m4


@_inline
def _kth(score, size, k, top):
    lowest = np.float32(-np.inf)
    if k == 1:  # the usual case: the largest, one pass without branches
        return _extremes(score, size, lowest)[0]
    if k <= 4:
        return _kth_few(score, size, k)
    # Scores of codes with room are residuals, at most about half a step: a threshold that
    # about k + 2 of them pass if they are spread evenly, lowered until k pass; only those
    # are ranked. -inf (no room) passes none.
    margin = np.float32(k + 2) / np.float32(size)
    threshold = np.float32(0.5) - margin
    while True:
        passed = 0
        for i in range(size):
            passed += score[i] > threshold
        if passed >= k:
            break
        if threshold == -np.inf:
            return threshold
        # Twice the margin, so about twice the scores pass: lowered by a whole step instead,
        # every score with room passed, and a block of 128 was then ranked by insertion.
        margin += margin
        lowered = np.float32(0.5) - margin
        threshold = np.float32(-np.inf) if threshold < np.float32(-1.0) else lowered
    m = 0
    for i in range(size):  # the passing scores to the front of ``top``, without branches
        top[m] = score[i]
        m += score[i] > threshold
    if m <= _RANK_ALL:
        # The k-th largest counting repeats: the least score that fewer than k others exceed.
        edge = np.float32(np.inf)
        for a in range(m):
            greater = 0
            for b in range(m):
                greater += top[b] > top[a]
            edge = min(edge, top[a]) if greater < k else edge
        return edge
    ranked = top[size:]  # the k largest so far, in order, after the passing scores
    for j in range(k):
        ranked[j] = lowest
    for i in range(m):
        v = top[i]
        if v > ranked[k - 1]:
            j = k - 1
            while j > 0 and ranked[j - 1] < v:
                ranked[j] = ranked[j - 1]
                j -= 1
            ranked[j] = v
    return ranked[k - 1]


@_inline
def _keep_sums(size, cmin, cmax, qb, rb, score, top):
    """Step the fewest codes of the block one step so that its sum is kept within half a
    step: the reference's ``_keep_sums`` (ranks by residual ``rb``, ties all move, -inf: no
    room)."""
    short = np.rint(_sum(rb, 0, size))
    if short == 0:
        return
    need = min(int(abs(short)), size)
    # Up: codes below cmax, ranked by residual; down: codes above cmin, by minus the
    # residual. Both as one comparison of the signed values, so no branch per direction.
    sign = np.float32(1.0) if short > 0 else np.float32(-1.0)
    bound = (np.float32(cmax) if short > 0 else np.float32(cmin)) * sign
    lowest = np.float32(-np.inf)
    for i in range(size):
        score[i] = rb[i] * sign if qb[i] * sign < bound else lowest
    edge = _kth(score, size, need, top)
    zero = np.float32(0.0)
    for i in range(size):
        # A code with room has a finite score; ties with the edge all move, as in NumPy.
        qb[i] += sign if (score[i] > lowest) & (score[i] >= edge) else zero


# Blocks read together where they run across a strided axis (``Q > 1``): the tile's
# neighbouring columns share each row's cache line and page.
TILE = 16


@_inline
def _gather_tile(w3, p, first, q, size, tile, xt):
    """The ``tile`` blocks at ``(p, first, q .. q + tile)`` into the rows of ``xt``, zeros
    past the axis' end; returns the valid length. Read row by row along ``q`` (contiguous):
    block by block, each of a block's weights was on a page of its own and its neighbour
    read the same pages again after the translations had left the TLB (blocks of 128 across
    a 4096-wide axis, MatMul's layout: 10 ns a weight in ``block_quantize``, 4.5 in tiles of
    16, 1.8 with the blocks along the contiguous axis; 32 or 64 a tile were slower)."""
    length = w3.shape[1]
    valid = min(size, length - first)
    up, uf, uq = np.uintp(p), np.uintp(first), np.uintp(q)
    for i in range(valid):
        for t in range(tile):
            xt[t, i] = w3[up, uf + np.uintp(i), uq + np.uintp(t)]
    for t in range(tile):
        for i in range(valid, size):
            xt[t, i] = np.float32(0.0)
    return valid


@_inline
def _scatter_tile(ct, vt, p, first, q, valid, tile, codes, deq):
    """``_gather_tile``'s inverse for the tile's codes and values, row by row along ``q``."""
    up, uf, uq = np.uintp(p), np.uintp(first), np.uintp(q)
    for i in range(valid):
        for t in range(tile):
            codes[up, uf + np.uintp(i), uq + np.uintp(t)] = ct[t, i]
            deq[up, uf + np.uintp(i), uq + np.uintp(t)] = vt[t, i]
