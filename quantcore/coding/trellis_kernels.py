"""Compiled loops of streams ``QENT`` v5 to v8 (``quantcore.coding.trellis_coder``): rANS whose
model of each code is chosen by its trellis state's quantizer and its neighbours' magnitudes
(v6 and v8 code a mirror of some codes: ``mirror``).

A trellis state machine is two arrays: ``transitions[state, parity]``, the next state by the
parity of a code's index, and ``quantizers[state]``, the quantizer a state uses (0: ``Q0``,
the even levels; 1: ``Q1``, the odd levels and zero). ``FOUR_STATES`` is VVC's (v5, v6),
``EIGHT_STATES`` DeepCABAC's (v7, v8): its path reaches levels about 0.1 dB closer at the
same rate.

Lanes and chunks as in v3 (``context_kernels``): ``LANES`` contiguous segments of a chunk,
each with its own rANS state and its own trellis state, which starts at the value the
stream stores for it (the state the whole tensor's path is in there). A code's context is
``quantizer · K + class(|k1| + |k2|)``: its state's quantizer and, as in v3, the magnitude
class of the indices of the lane's two codes before it (``K`` classes, 1: the quantizer
alone). After a code the state moves by the parity of its index, and the magnitudes shift by
its own: both read from tables per context and slot.
"""

from __future__ import annotations

import numpy as np

from quantcore.coding.context_kernels import LANES, _put, _segment, add_context_counts
from quantcore.coding.rans_kernels import _L, _32, flush_states
from quantcore.jit import njit

FOUR_STATES = (
    np.array([[0, 2], [2, 0], [1, 3], [3, 1]], np.int64),
    np.array([0, 0, 1, 1], np.int64),
)
EIGHT_STATES = (
    np.array([[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]], np.int64),
    np.array([0, 1, 0, 1, 0, 1, 0, 1], np.int64),
)
# A 32-state machine (v12, v13): the trellis code of parity-check polynomials h0 = 57,
# h1 = 22 (octal), states numbered breadth-first from 0. In this labelling (the next
# quantizer a parity check on the past quantizers and parities) VVC's machine is h0 = 5,
# h1 = 2 and DeepCABAC's h0 = 17, h1 = 04. Of the 32-state codes, the best measured on
# orientation's largest tensors at 5.3 bits a weight: 0.135 dB closer than DeepCABAC's at the
# same rate (0.14-0.17 dB on nudenet and ocr-det at 2.3-6.7 bits a weight, 0.35-1.25% of the
# rate; the best 16-state code 0.07 dB).
THIRTY_TWO_STATES = (
    np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15],
              [16, 17], [18, 19], [20, 21], [22, 23], [24, 25], [26, 27], [28, 29], [30, 31],
              [29, 28], [31, 30], [25, 24], [27, 26], [21, 20], [23, 22], [17, 16], [19, 18],
              [13, 12], [15, 14], [9, 8], [11, 10], [5, 4], [7, 6], [1, 0], [3, 2]], np.int64),
    np.array([0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1] * 2, np.int64),
)
# Per lane in ``first_lanes``: rANS state, trellis state, quantizer, |k1|, |k2|, and whether
# the lane's last non-zero index was negative (a mirrored stream's).
FIELDS = 6
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@njit(inline="always")
def _level(k, q1):
    """The integer level of index ``k`` in quantizer ``q1`` (0: Q0, 1: Q1): ``_index``'s
    inverse."""
    if q1 == 0:
        return 2 * k
    return 2 * k - (1 if k > 0 else (-1 if k < 0 else 0))


@njit(inline="always")
def _index(m, q1):
    """The index of level ``m`` in quantizer ``q1``, or -(1 << 40) when it is not one."""
    if q1 == 0:
        return m // 2 if m % 2 == 0 else -(np.int64(1) << 40)
    if m == 0:
        return np.int64(0)
    if m % 2 == 0:
        return -(np.int64(1) << 40)
    return (m + 1) // 2 if m > 0 else (m - 1) // 2


@_jit
def compact_symbols(gaps, code_min, symbols, sides):
    """A compact table's symbols from their ``gaps`` (each minus 1, the first absolute) and
    which quantizer's rows list each (``compact_table.allowed``: ``sides[0]`` even levels,
    ``sides[1]`` odd levels and level 0); in one call, where NumPy took five."""
    at = np.int64(-1)
    for s in range(symbols.size):
        at += np.int64(gaps[s]) + 1
        symbols[s] = at
        level = at + code_min
        sides[0, s] = level % 2 == 0
        sides[1, s] = level % 2 != 0 or level == 0


@_jit
def compact_rows(zigs, sides, k_classes, values, precision, freqs):
    """Fill ``freqs`` (contexts × symbols, zeros) from a compact table's rows
    (``quantcore.coding.compact_table``): ``zigs`` the zigzagged differences of each row's
    entries in context order, row ``r`` listing the symbols where ``sides[r // k_classes]``.
    False where an entry falls outside ``values`` or a row leaves its largest entry nothing."""
    total = np.int64(1) << precision
    at = 0
    for row in range(freqs.shape[0]):
        side = sides[row // k_classes]
        entry = np.int64(0)
        best = np.int64(0)
        best_at = -1
        used = np.int64(0)
        for s in range(freqs.shape[1]):
            if not side[s]:
                continue
            z = np.int64(zigs[at])
            at += 1
            entry += (z >> 1) if z % 2 == 0 else -((z + 1) >> 1)
            if entry < 0 or entry > values.size:
                return False
            if entry > 0:
                freqs[row, s] = values[entry - 1]
                used += values[entry - 1]
                if entry > best:
                    best = entry
                    best_at = s
        if best_at >= 0:
            left = total - used + freqs[row, best_at]
            if left < 1:
                return False
            freqs[row, best_at] = left
    return True


@_jit
def decoder_tables(freqs, symbols, code_min, k_classes, table):
    """Fill the decoder's table (``trellis_plan.decoder_tables``): per context and slot, one
    word of ``f - 1`` (bits 0-15), ``slot - cum`` (16-31), the code (32-47), its index's
    parity (48) and magnitude capped at 255 (56-63). Each row of ``freqs`` sums to the
    table's width or is all zero (checked before); every slot is written."""
    for c in range(freqs.shape[0]):
        q1 = c // k_classes
        slot = 0
        for s in range(symbols.size):
            f = freqs[c, s]
            if f == 0:
                continue
            m = symbols[s] + code_min
            k = m // 2 if q1 == 0 else (m + 1) // 2 if m > 0 else (m - 1) // 2 if m < 0 else 0
            fixed = (np.uint64(f - 1) | np.uint64(symbols[s]) << np.uint64(32)
                     | np.uint64(k & 1) << np.uint64(48)
                     | np.uint64(min(abs(k), 255)) << np.uint64(56))  # fmt: skip
            for j in range(f):
                table[c, slot] = fixed | np.uint64(j) << np.uint64(16)
                slot += 1
        for j in range(slot, table.shape[1]):  # a row of no symbol (``table`` is not zeroed)
            table[c, j] = 0


@_jit
def states_of(codes, code_min, transitions, quantizers, states):
    """The trellis state before each code (``states``, uint8) on the machine's path from
    state 0, the level of code ``c`` being ``c + code_min``; returns the number of codes on
    the path (``codes.size`` when every level belongs to its state's quantizer)."""
    state = 0
    for i in range(codes.size):
        states[i] = state
        k = _index(np.int64(codes[i]) + code_min, quantizers[state])
        if k == -(np.int64(1) << 40):
            return i
        state = transitions[state, k & 1]
    return codes.size


@_jit
def mirror(codes, code_min, back, out):
    """Stream v6's codes: in each lane of a chunk, a code that follows a negative index (the
    lane's last non-zero one) is mirrored, ``c -> -c - 2 * code_min`` (level ``m -> -m``,
    which keeps its index's parity and magnitude). ``back`` False: ``codes`` are the levels'
    own codes and ``out`` gets the stream's; True: the other way (``out`` may be ``codes``)."""
    n = codes.size
    for lane in range(LANES):
        start, length = _segment(n, lane)
        _mirror_lane(codes, code_min, back, out, start, start + length, np.int64(0))


@_jit
def mirror_from(codes, code_min, step, lanes):
    """``mirror`` back, in place, of each lane's codes from its code ``step`` on, the lane
    following a negative index or not as ``lanes`` (``first_lanes``'s last row) says: where
    the vector loop, which mirrors as it decodes, left the chunk."""
    n = codes.size
    for lane in range(LANES):
        start, length = _segment(n, lane)
        if step < length:
            _mirror_lane(codes, code_min, True, codes, start + step, start + length,
                         np.int64(lanes[(FIELDS - 1) * LANES + lane]))  # fmt: skip


@njit(inline="always")
def _mirror_lane(codes, code_min, back, out, begin, end, negative):
    # ``negative`` 0 or 1, without branches: signs are a coin toss to a predictor
    for i in range(begin, end):
        c = np.int64(codes[i])
        w = c + negative * (-2 * c - 2 * code_min)
        out[i] = w
        level = (w if back else c) + code_min
        negative = np.int64(level < 0) | (np.int64(level == 0) & negative)


@_jit
def contexts(codes, states, code_min, classes, quantizers, out):
    """The context of every code of a chunk (``out``, uint8): its state's quantizer times
    the number of classes, plus the class of ``|k1| + |k2|``, the magnitudes of the indices
    of the lane's two codes before it (0 at the lane's start)."""
    n = codes.size
    top = classes.size - 1
    k_classes = classes[top] + 1
    for lane in range(LANES):
        start, length = _segment(n, lane)
        d1 = 0
        d2 = 0
        for t in range(length):
            i = start + t
            q1 = quantizers[states[i]]
            out[i] = q1 * k_classes + classes[min(d1 + d2, top)]
            k = _index(np.int64(codes[i]) + code_min, q1)
            d2 = d1
            d1 = min(abs(k), 255)


@_jit
def count_contexts(codes, states, code_min, classes, quantizers, chunk, counts):
    """``counts[context, code]`` += 1 for every code, contexts taken over chunks of
    ``chunk`` codes."""
    ctx = np.empty(min(chunk, codes.size), dtype=np.uint8)
    for begin in range(0, codes.size, chunk):
        part = codes[begin : begin + chunk]
        contexts(part, states[begin : begin + chunk], code_min, classes, quantizers,
                 ctx[: part.size])
        add_context_counts(ctx, part, 0, counts)


@_jit
def encode_chunk(codes, states, code_min, classes, quantizers, table, words):
    """Code a chunk into the end of ``words`` (room for ``codes.size + 2 * LANES``) in the
    reverse of the decode order, each code under ``table[its context]`` (rows as
    ``rans_kernels``'s). Returns where the words start, or -1 if a code has no frequency in
    its context."""
    n = codes.size
    ctx = np.empty(n, dtype=np.uint8)
    contexts(codes, states, code_min, classes, quantizers, ctx)
    rans_states = np.full(LANES, _L, dtype=np.uint64)
    pos = words.size
    q, r = n // LANES, n % LANES
    bad = False
    for lane in range(r - 1, -1, -1):  # the tail: step q of the first r lanes
        i = _segment(n, lane)[0] + q
        rans_states[lane], pos, absent = _put(rans_states[lane], codes[i], 0, ctx[i], table,
                                              words, pos)  # fmt: skip
        bad |= absent
    for t in range(q - 1, -1, -1):
        for lane in range(LANES - 1, -1, -1):
            i = _segment(n, lane)[0] + t
            rans_states[lane], pos, absent = _put(rans_states[lane], codes[i], 0, ctx[i],
                                                  table, words, pos)  # fmt: skip
            bad |= absent
    if bad:
        return -1
    return flush_states(rans_states, words, pos)


@njit(inline="always")
def _take(lane, i, xs, ts, d1, d2, classes, k_classes, transitions, quantizers, words, pos, last,
          mask, prec, table, out):  # fmt: skip
    x = xs[lane]
    c = quantizers[ts[lane]] * k_classes + classes[min(d1[lane] + d2[lane], classes.size - 1)]
    e = table[c, x & mask]  # one load: the slot's four fields in a word
    out[i] = (e >> np.uint64(32)) & np.uint64(0xFFFF)
    ts[lane] = transitions[ts[lane], (e >> np.uint64(48)) & np.uint64(1)]
    d2[lane] = d1[lane]
    d1[lane] = e >> np.uint64(56)
    x = ((e & np.uint64(0xFFFF)) + np.uint64(1)) * (x >> prec) + (
        (e >> np.uint64(16)) & np.uint64(0xFFFF))
    word = np.uint64(words[min(pos, last)])
    low = x < _L
    xs[lane] = (x << _32 | word) if low else x
    return pos + np.int64(low)


@_jit
def first_lanes(words, starts, transitions, quantizers, k_classes, lanes):
    """Each lane's state before its first code into ``lanes`` (``FIELDS`` rows of ``LANES``:
    rANS state, trellis state, its quantizer times ``k_classes``, the two magnitudes before
    and the sign before, zero); the chunk's words hold at least the ``LANES`` final states
    (checked by the caller)."""
    for lane in range(LANES):
        t = starts[lane] & (transitions.shape[0] - 1)
        lanes[lane] = np.uint64(words[2 * lane]) | np.uint64(words[2 * lane + 1]) << _32
        lanes[LANES + lane] = t
        lanes[2 * LANES + lane] = quantizers[t] * k_classes
        for f in range(3, FIELDS):
            lanes[f * LANES + lane] = 0


@_jit
def decode_chunk(words, precision, starts, classes, transitions, quantizers, table, out):
    """Decode ``out.size`` codes of the machine ``transitions``, ``quantizers`` (a power of two
    states); ``table`` holds a word per context and slot (``decoder_tables``'s: the slot's
    frequency, offset, code, index parity and magnitude); ``starts`` holds each lane's first
    trellis state and ``classes`` the class of each magnitude sum (as ``contexts``). Returns
    True if the stream ended as it must."""
    lanes = np.empty(FIELDS * LANES, dtype=np.uint64)
    first_lanes(words, starts, transitions, quantizers, 1, lanes)
    return decode_rest(words, precision, classes, transitions, quantizers, table, out, lanes,
                       2 * LANES, 0)  # fmt: skip


@_jit
def decode_rest(words, precision, classes, transitions, quantizers, table, out, lanes, pos,
                step):  # fmt: skip
    """``decode_chunk`` from each lane's code ``step`` on, the lanes as ``lanes`` holds them
    (``first_lanes``) and the next word at ``pos``: where the vector loop
    (``trellis_simd``) left the chunk."""
    n = out.size
    mask = np.uint64((1 << precision) - 1)
    prec = np.uint64(precision)
    last = words.size - 1
    k_classes = classes[classes.size - 1] + 1
    xs = lanes[:LANES].copy()
    ts = lanes[LANES : 2 * LANES].astype(np.int64)
    d1 = lanes[3 * LANES : 4 * LANES].astype(np.int64)
    d2 = lanes[4 * LANES : 5 * LANES].astype(np.int64)
    begin = np.empty(LANES, dtype=np.int64)
    for lane in range(LANES):
        begin[lane] = _segment(n, lane)[0]
    q, r = n // LANES, n % LANES
    for at in range(step, q):
        for lane in range(LANES):
            pos = _take(lane, begin[lane] + at, xs, ts, d1, d2, classes, k_classes,
                        transitions, quantizers, words, pos, last, mask, prec, table, out)
    for lane in range(r):
        pos = _take(lane, begin[lane] + q, xs, ts, d1, d2, classes, k_classes, transitions,
                    quantizers, words, pos, last, mask, prec, table, out)
    ok = pos == words.size
    for lane in range(LANES):
        ok &= xs[lane] == _L
    return ok
