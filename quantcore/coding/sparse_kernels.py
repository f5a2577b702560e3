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
from quantcore.coding.trellis_kernels import _index, _level
from quantcore.jit import njit

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
# v15 (trellis): two banks of the above, one a quantizer, then the quantizer flags.
QUANTIZER = 2 * CONTEXTS
TRELLIS_CONTEXTS = QUANTIZER + 2
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



@njit(inline="always")
def _put_place(st, out, fast, slow, start, q, skipped, counts, prev_q, prev_gap):
    """The place of a trellis stream's next non-zero index: its quantizer ``q`` (a flag,
    where the run of level 0 from state ``start`` meets both quantizers) and ``skipped``, the
    places of that quantizer the run passed, as a gap (``skipped + 1``) under ``q``'s bank.
    Returns the gap's class."""
    if counts[start, 0] and counts[start, 1]:
        _put_bit(st, out, fast, slow, QUANTIZER + prev_q, q)
    bank = q * CONTEXTS
    return _put_class_and_mantissa(st, out, fast, slow, skipped + 1, (bank + GAP_CLS, GAP_NEAR),
                                   prev_gap, bank + GAP_MAN1, bank + GAP_MAN2, GAP_CLASSES)


@_jit
def encode_trellis(codes, code_min, transitions, quantizers, counts, out):
    """Stream v15's payload: the codes whose level ``code + code_min`` is not 0, each as its
    place (``_put_place``: counted in places of its own quantizer, where a run of level 0
    can only hold zeros in the other one) and its trellis index, sign and magnitude as
    ``encode`` codes a distance, under its quantizer's bank of contexts. ``counts[s, q]``:
    the places of quantizer ``q`` in one period of a run from state ``s``. Returns as
    ``encode``, or -2 at a level off the path."""
    fast = np.full(TRELLIS_CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(TRELLIS_CONTEXTS, ONE >> 1, dtype=np.int64)
    st = np.zeros(5, dtype=np.int64)
    st[1] = MASK32
    st[3] = 1
    prev_gap = 0
    prev_sign = 0
    prev_mag = 0
    prev_q = 0
    state = 0
    start = 0
    passed = np.zeros(2, dtype=np.int64)
    for i in range(codes.size):
        q1 = quantizers[state]
        k = _index(np.int64(codes[i]) + code_min, q1)
        if k == -(np.int64(1) << 40):
            return -2
        if k == 0:
            passed[q1] += 1
            state = transitions[state, 0]
            continue
        if st[4] + SLACK > out.size:
            return -1
        n = _put_place(st, out, fast, slow, start, q1, passed[q1], counts, prev_q, prev_gap)
        prev_gap = min(n, GAP_NEAR - 1)
        prev_q = q1
        bank = q1 * CONTEXTS
        _put_bit(st, out, fast, slow, bank + SIGN + prev_sign, k < 0)
        _put_class_and_mantissa(st, out, fast, slow, abs(k), (bank + CLS, NEAR), prev_mag,
                                bank + MAN1, bank + MAN2, CLASSES)  # fmt: skip
        prev_sign, prev_mag = _sign_and_length(k)
        state = transitions[state, k & 1]
        start = state
        passed[:] = 0
    return _finish_encoder(st, out)


@_jit
def decode_trellis(data, code_min, top, others, transitions, quantizers, runs, counts, offsets,
                   out):
    """Fill ``out`` with level 0's code and decode the ``others`` codes of other levels into
    their places; False as ``decode``. A run of level 0 (parity 0 in both quantizers) walks
    the machine's parity-0 column, a permutation: ``runs[r, s]`` is the state ``r`` zeros
    lead to from ``s`` (``r`` below the permutation's order, the period), ``offsets[s, q]``
    the places of quantizer ``q`` within a period from ``s`` (``counts[s, q]`` of them), so
    a code's place and state follow from its gap without walking the run."""
    out[:] = -code_min
    fast = np.full(TRELLIS_CONTEXTS, ONE >> 1, dtype=np.int64)
    slow = np.full(TRELLIS_CONTEXTS, ONE >> 1, dtype=np.int64)
    code = np.int64(0)
    for j in range(4):
        code = (code << 8) | _byte(data, j)
    rng = np.int64(MASK32)
    pos = np.int64(4)
    period = runs.shape[0]
    prev_gap = 0
    prev_sign = 0
    prev_mag = 0
    prev_q = 0
    at = np.int64(-1)
    state = 0
    for _ in range(others):
        q1 = 0 if counts[state, 0] else 1
        if counts[state, 0] and counts[state, 1]:
            code, rng, pos, q1 = _bit(code, rng, pos, data, fast, slow, QUANTIZER + prev_q)
        bank = q1 * CONTEXTS
        code, rng, pos, gap, n = _get_class_and_mantissa(
            code, rng, pos, data, fast, slow, (bank + GAP_CLS, GAP_NEAR), prev_gap,
            bank + GAP_MAN1, bank + GAP_MAN2, GAP_CLASSES)
        prev_gap = min(n, GAP_NEAR - 1)
        prev_q = q1
        per = counts[state, q1]
        skip = (gap - 1) // per * period + offsets[state, q1, (gap - 1) % per]
        at += skip + 1
        if at >= out.size:
            return False
        state = runs[skip % period, state]
        code, rng, pos, negative = _bit(code, rng, pos, data, fast, slow, bank + SIGN + prev_sign)
        code, rng, pos, m, _ = _get_class_and_mantissa(
            code, rng, pos, data, fast, slow, (bank + CLS, NEAR), prev_mag, bank + MAN1,
            bank + MAN2, CLASSES)
        k = -m if negative else m
        value = _level(k, q1) - code_min
        if value < 0 or value > top:
            return False
        out[at] = value
        state = transitions[state, k & 1]
        prev_sign, prev_mag = _sign_and_length(k)
    return True
