"""Compiled loops of stream ``QENT`` v14 (``quantcore.coding.sparse``): v4's range coder
and adaptive probabilities (``adaptive_kernels``) over the codes that differ from the mode,
each coded as its gap (the run of mode codes before it) and its distance from the mode.

A gap ``g`` is binarised as Exp-Golomb of ``g + 1``: its class ``c = bit_length(g + 1) - 1``
in unary (flags ``c > j``), the two bits below the leading one as flags, the rest
equiprobable. Class flags have the context ``j`` and the previous gap's class (capped at
``GAP_NEAR - 1``: non-mode codes come in runs, a channel at a time); the two mantissa flags
the class. A distance is binarised as v4 binarises a non-zero one (sign, class in unary, two
flags of mantissa, the rest plain) under v4's contexts, the previous distance's sign and bit
length taking the place of the previous code's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from quantcore.coding.adaptive_kernels import (
    CLASSES,
    MASK32,
    NEAR,
    ONE,
    _bit,
    _byte,
    _finish_encoder,
    _put_bit,
    _put_raw,
    _raw,
    _sign_and_length,
)

GAP_CLASSES = 32  # bit_length(g + 1) - 1 for a gap below 2^32
GAP_NEAR = 8  # the previous gap's class, capped: the gap class flags' second index
# Context offsets: distances as v4 without its zero flag (sign 3, class flags CLASSES × NEAR,
# the first mantissa bit per class, the second per class and first bit), then the gaps'
# class flags (GAP_CLASSES × GAP_NEAR) and mantissa flags (per class; per class and bit).
SIGN = 0
CLS = SIGN + 3
MAN1 = CLS + CLASSES * NEAR
MAN2 = MAN1 + CLASSES
GAP_CLS = MAN2 + 2 * CLASSES
GAP_MAN1 = GAP_CLS + GAP_CLASSES * GAP_NEAR
GAP_MAN2 = GAP_MAN1 + GAP_CLASSES
CONTEXTS = GAP_MAN2 + 2 * GAP_CLASSES
SLACK = 256  # bytes one non-mode code can take at most (gap and distance: about 130 flags)
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@njit(inline="always")
def _put_class_and_mantissa(st, out, fast, slow, m, cls, near, man1, man2, classes):
    """``m >= 1`` as its class ``n = bit_length(m) - 1`` in unary (flag ``j`` under context
    ``cls[0] + cls[1] * j + near``: ``cls`` is a row block's first context and row width),
    then the two bits below the leading one under ``man1 + n`` and ``man2 + 2n + first``, the
    rest plain. Returns ``n``."""
    n = 0
    while (m >> (n + 1)) > 0:
        n += 1
    for j in range(n):
        _put_bit(st, out, fast, slow, cls[0] + cls[1] * j + near, 1)
    if n < classes - 1:
        _put_bit(st, out, fast, slow, cls[0] + cls[1] * n + near, 0)
    if n >= 1:
        first = (m >> (n - 1)) & 1
        _put_bit(st, out, fast, slow, man1 + n, first)
        if n >= 2:
            _put_bit(st, out, fast, slow, man2 + 2 * n + first, (m >> (n - 2)) & 1)
            for j in range(n - 3, -1, -1):
                _put_raw(st, out, (m >> j) & 1)
    return n


@njit(inline="always")
def _get_class_and_mantissa(code, rng, pos, data, fast, slow, cls, near, man1, man2, classes):
    """The inverse of ``_put_class_and_mantissa``, on the decoder's state in registers
    (``adaptive_kernels._bit``): returns it and ``(m, n)``."""
    n = 0
    while n < classes - 1:
        code, rng, pos, more = _bit(code, rng, pos, data, fast, slow, cls[0] + cls[1] * n + near)
        if not more:
            break
        n += 1
    m = 1
    if n >= 1:
        code, rng, pos, first = _bit(code, rng, pos, data, fast, slow, man1 + n)
        m = 2 | first
        if n >= 2:
            code, rng, pos, b = _bit(code, rng, pos, data, fast, slow, man2 + 2 * n + first)
            m = (m << 1) | b
            for _ in range(n - 2):
                code, rng, pos, b = _raw(code, rng, pos, data)
                m = (m << 1) | b
    return code, rng, pos, m, n


@_jit
def encode(codes, mode, out):
    """Code the non-mode codes of ``codes`` into ``out``; returns the bytes written (the
    first, LZMA's leading zero, is dropped by the caller; trailing zeros trimmed), or -1 once
    fewer than ``SLACK`` bytes are left."""
    fast = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    st = np.zeros(5, dtype=np.int64)
    st[1] = MASK32
    st[3] = 1
    gap_rows = (GAP_CLS, GAP_NEAR)
    rows = (CLS, NEAR)
    prev_gap = 0
    prev_sign = 0
    prev_mag = 0
    last = -1
    for i in range(codes.size):
        d = np.int64(codes[i]) - mode
        if d == 0:
            continue
        if st[4] + SLACK > out.size:
            return -1
        prev_gap = min(_put_class_and_mantissa(st, out, fast, slow, i - last, gap_rows,
                                               prev_gap, GAP_MAN1, GAP_MAN2, GAP_CLASSES),
                       GAP_NEAR - 1)  # fmt: skip
        last = i
        _put_bit(st, out, fast, slow, SIGN + prev_sign, d < 0)
        m = abs(d)
        _put_class_and_mantissa(st, out, fast, slow, m, rows, prev_mag, MAN1, MAN2, CLASSES)
        prev_sign, prev_mag = _sign_and_length(d)
    return _finish_encoder(st, out)


@_jit
def decode(data, mode, top, others, out):
    """Fill ``out`` with the mode and decode the ``others`` non-mode codes into their places;
    False where a place falls past the end or a code outside ``[0, top]`` (a corrupt stream).
    Reads zeros past the payload's end, as v4."""
    out[:] = mode
    fast = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(CONTEXTS, ONE >> 1, dtype=np.int64)
    code = np.int64(0)
    for j in range(4):
        code = (code << 8) | _byte(data, j)
    rng = np.int64(MASK32)
    pos = np.int64(4)
    gap_rows = (GAP_CLS, GAP_NEAR)
    rows = (CLS, NEAR)
    prev_gap = 0
    prev_sign = 0
    prev_mag = 0
    at = -1
    for _ in range(others):
        code, rng, pos, step, n = _get_class_and_mantissa(
            code, rng, pos, data, fast, slow, gap_rows, prev_gap, GAP_MAN1, GAP_MAN2, GAP_CLASSES)
        prev_gap = min(n, GAP_NEAR - 1)
        at += step
        if at >= out.size:
            return False
        code, rng, pos, negative = _bit(code, rng, pos, data, fast, slow, SIGN + prev_sign)
        code, rng, pos, m, _ = _get_class_and_mantissa(
            code, rng, pos, data, fast, slow, rows, prev_mag, MAN1, MAN2, CLASSES)
        d = -m if negative else m
        value = mode + d
        if value < 0 or value > top:
            return False
        out[at] = value
        prev_sign, prev_mag = _sign_and_length(d)
    return True
