"""Compiled loops of the context-modelled rANS coder of stream ``QENT`` v3
(``quantcore.coding.context``); imported on first use, like ``rans_kernels``.

A chunk of ``n`` codes is split into ``LANES`` contiguous segments (lane ``j`` holds
``n // LANES`` codes, one more for ``j < n % LANES``), each coded by its own 64-bit state, the
lanes taking turns (decode order: step ``t`` of lane 0, of lane 1, ..., of lane 7, then step
``t + 1``). The model of a code is chosen by its context: with ``d`` the distance of a high
part from the most frequent one (``mode``), the context of the code at step ``t`` of a lane is
``class(d[t-1] + d[t-2])`` over that lane's previous two codes (0 before the start),
``class(s) = min(K - 1, bit_length(s))`` (a table: ``context.class_table``). The rANS step
is ``rans_kernels``'s.
"""

from __future__ import annotations

import numpy as np

from quantcore.coding.rans_kernels import (
    _L,
    _MASK32,
    BIAS,
    CMPL,
    RCP,
    XMAX,
    _32,
    _ended,
    _mulhi,
    flush_states,
)
from quantcore.jit import njit

LANES = 8
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@njit(inline="always")
def _segment(n, lane):
    q, r = n // LANES, n % LANES
    return lane * q + min(lane, r), q + (1 if lane < r else 0)


@_jit
def contexts(codes, raw_bits, mode, classes, out):
    """The context of every code of a chunk (``out``, uint8); ``classes[s]`` is the class
    of a distance sum ``s`` (the last, of any larger)."""
    n = codes.size
    top = np.uintp(classes.size - 1)
    for lane in range(LANES):
        start, length = _segment(n, lane)
        # Unsigned indices: a signed one is checked for a negative value to wrap around
        # (1.75 -> 1.04 ns a code on a Zen 4).
        first = np.uintp(start)
        d1 = np.uintp(0)
        d2 = np.uintp(0)
        for t in range(np.uintp(0), np.uintp(length)):
            out[first + t] = classes[min(d1 + d2, top)]
            h = np.int64(codes[first + t] >> raw_bits)
            d2 = d1
            d1 = np.uintp(abs(h - mode))


@_jit
def count_contexts(codes, raw_bits, mode, classes, chunk, counts):
    """Add the counts of each (context, high part) over chunks of ``chunk`` codes to
    ``counts`` (``k`` rows, a column for every high part)."""
    ctx = np.empty(min(chunk, codes.size), dtype=np.uint8)
    for begin in range(0, codes.size, chunk):
        part = codes[begin : begin + chunk]
        contexts(part, raw_bits, mode, classes, ctx[: part.size])
        add_context_counts(ctx, part, raw_bits, counts)


@njit(inline="always")
def add_context_counts(ctx, part, shift, counts):
    """``counts[ctx[i], part[i] >> shift] += 1`` for each code of ``part``, eight an
    iteration (one an iteration took 4.2 ns a code on a Zen 1, eight 0.7)."""
    size, bits = np.uintp(part.size), np.uintp(shift)
    octets = size - size % np.uintp(8)
    for i in range(np.uintp(0), octets, np.uintp(8)):
        for j in range(np.uintp(0), np.uintp(8)):
            counts[ctx[i + j], np.uintp(part[i + j]) >> bits] += 1
    for i in range(octets, size):
        counts[ctx[i], np.uintp(part[i]) >> bits] += 1


@njit(inline="always")
def _put(x, code, raw_bits, c, table, words, pos):
    """``rans_kernels._put`` with the row of context ``c`` (``raw_bits``, ``pos`` unsigned)."""
    row = np.uintp(code) >> raw_bits
    x_max = table[c, row, XMAX]
    words[pos - np.uintp(1)] = np.uint32(x & _MASK32)  # kept only if the state overflows
    big = x >= x_max
    pos -= np.uintp(big)
    x = (x >> _32) if big else x
    cmpl = table[c, row, CMPL]
    q = _mulhi(x, table[c, row, RCP]) >> (cmpl >> _32)  # type: ignore[call-arg]
    return x + table[c, row, BIAS] + q * (cmpl & _MASK32), pos, x_max == 0


@_jit
def encode_chunk(codes, raw_bits, mode, classes, table, words, packed):
    """Code a chunk into the end of ``words`` (room for ``codes.size + 2 * LANES``) in the
    reverse of the decode order; ``table[context, high]`` rows as ``rans_kernels``'s. Returns
    where the words start, or -1 if a code has no frequency in its context."""
    n = codes.size
    ctx = np.empty(n, dtype=np.uint8)
    contexts(codes, raw_bits, mode, classes, ctx)
    states = np.full(LANES, _L, dtype=np.uint64)
    pos, shift = np.uintp(words.size), np.uintp(raw_bits)  # unsigned, as rans_kernels'
    q, r = n // LANES, n % LANES
    starts = np.empty(LANES, dtype=np.uintp)
    for lane in range(LANES):
        starts[lane] = _segment(n, lane)[0]
    bad = False
    for lane in range(r - 1, -1, -1):  # the tail: step q of the first r lanes
        i = starts[lane] + np.uintp(q)
        states[lane], pos, absent = _put(states[lane], codes[i], shift, ctx[i], table,
                                         words, pos)  # fmt: skip
        bad |= absent
    s0, s1, s2, s3, s4, s5, s6, s7 = (starts[0], starts[1], starts[2], starts[3], starts[4],
                                      starts[5], starts[6], starts[7])  # fmt: skip
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    x4, x5, x6, x7 = states[4], states[5], states[6], states[7]
    for back in range(np.uintp(q)):  # the last step first
        t = np.uintp(q - 1) - back
        x7, pos, a7 = _put(x7, codes[s7 + t], shift, ctx[s7 + t], table, words, pos)
        x6, pos, a6 = _put(x6, codes[s6 + t], shift, ctx[s6 + t], table, words, pos)
        x5, pos, a5 = _put(x5, codes[s5 + t], shift, ctx[s5 + t], table, words, pos)
        x4, pos, a4 = _put(x4, codes[s4 + t], shift, ctx[s4 + t], table, words, pos)
        x3, pos, a3 = _put(x3, codes[s3 + t], shift, ctx[s3 + t], table, words, pos)
        x2, pos, a2 = _put(x2, codes[s2 + t], shift, ctx[s2 + t], table, words, pos)
        x1, pos, a1 = _put(x1, codes[s1 + t], shift, ctx[s1 + t], table, words, pos)
        x0, pos, a0 = _put(x0, codes[s0 + t], shift, ctx[s0 + t], table, words, pos)
        bad |= a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7
    states[0], states[1], states[2], states[3] = x0, x1, x2, x3
    states[4], states[5], states[6], states[7] = x4, x5, x6, x7
    if bad:
        return -1
    return flush_states(states, words, np.int64(pos))


@njit(inline="always")
def _advance(x, d1, d2, i, classes, mask, prec, symbol_of, freq, start, value, dist, out):
    """A lane's code at state ``x`` (its last two distances ``d1``, ``d2``) into ``out[i]``;
    the state before its refill, the new distances."""
    c = classes[min(d1 + d2, classes.size - 1)]
    slot = x & mask
    s = symbol_of[c, slot]
    out[i] = value[s]
    x = np.uint64(freq[c, s]) * (x >> prec) + (slot - np.uint64(start[c, s]))
    return x, np.int64(dist[s]), d1


@njit(inline="always")
def _refill(x, words, pos, last):
    """The state refilled with the next word where it fell below ``L``; the next position."""
    word = np.uint64(words[min(pos, last)])
    low = x < _L
    return (x << _32 | word) if low else x, pos + np.int64(low)


@_jit
def decode_chunk(words, precision, classes, symbol_of, freq, start, value, dist, out):
    """Decode ``out.size`` high parts (shifted) with, for each context ``c`` and slot,
    ``symbol_of[c, slot]`` the index of the slot's symbol, ``freq[c, s]`` and ``start[c, s]``
    its frequency and cumulative frequency in context ``c``, ``value[s]`` the high part
    shifted left by the raw bits and ``dist[s]`` its distance from the mode (capped);
    ``classes[d]`` is the class of a distance sum ``d`` (the last for any larger). The low
    bits are added by the caller. Returns True if the stream ended as it must."""
    n = out.size
    mask = np.uint64((1 << precision) - 1)
    prec = np.uint64(precision)
    last = words.size - 1
    states = np.empty(LANES, dtype=np.uint64)
    for lane in range(LANES):
        states[lane] = np.uint64(words[2 * lane]) | np.uint64(words[2 * lane + 1]) << _32
    d1 = np.zeros(LANES, dtype=np.int64)
    d2 = np.zeros(LANES, dtype=np.int64)
    starts = np.empty(LANES, dtype=np.int64)
    for lane in range(LANES):
        starts[lane] = _segment(n, lane)[0]
    pos = 2 * LANES
    q, r = n // LANES, n % LANES
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    x4, x5, x6, x7 = states[4], states[5], states[6], states[7]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.int64(0)
    b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.int64(0)
    s0, s1, s2, s3 = starts[0], starts[1], starts[2], starts[3]
    s4, s5, s6, s7 = starts[4], starts[5], starts[6], starts[7]
    # The lanes in registers (LANES is 8), their codes first (eight independent chains
    # through the tables), then their refills in lane order: a lane's word position then waits
    # on the comparisons before it, not on the table reads of the lanes before it.
    for step in range(q):
        x0, a0, b0 = _advance(x0, a0, b0, s0 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x1, a1, b1 = _advance(x1, a1, b1, s1 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x2, a2, b2 = _advance(x2, a2, b2, s2 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x3, a3, b3 = _advance(x3, a3, b3, s3 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x4, a4, b4 = _advance(x4, a4, b4, s4 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x5, a5, b5 = _advance(x5, a5, b5, s5 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x6, a6, b6 = _advance(x6, a6, b6, s6 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x7, a7, b7 = _advance(x7, a7, b7, s7 + step, classes, mask, prec, symbol_of,
                              freq, start, value, dist, out)
        x0, pos = _refill(x0, words, pos, last)
        x1, pos = _refill(x1, words, pos, last)
        x2, pos = _refill(x2, words, pos, last)
        x3, pos = _refill(x3, words, pos, last)
        x4, pos = _refill(x4, words, pos, last)
        x5, pos = _refill(x5, words, pos, last)
        x6, pos = _refill(x6, words, pos, last)
        x7, pos = _refill(x7, words, pos, last)
    states[0], states[1], states[2], states[3] = x0, x1, x2, x3
    states[4], states[5], states[6], states[7] = x4, x5, x6, x7
    d1[0], d1[1], d1[2], d1[3], d1[4], d1[5], d1[6], d1[7] = a0, a1, a2, a3, a4, a5, a6, a7
    d2[0], d2[1], d2[2], d2[3], d2[4], d2[5], d2[6], d2[7] = b0, b1, b2, b3, b4, b5, b6, b7
    for lane in range(r):  # the tail: step q of the first r lanes
        x, d1[lane], d2[lane] = _advance(states[lane], d1[lane], d2[lane], starts[lane] + q,
                                         classes, mask, prec, symbol_of, freq, start, value,
                                         dist, out)  # fmt: skip
        states[lane], pos = _refill(x, words, pos, last)
    return _ended(states, pos, words.size)
