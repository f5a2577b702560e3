"""Compiled inner loops of the interleaved rANS coder of stream ``QENT`` v2.

Imported only by ``quantcore.coding.rans`` on first use: importing numba costs about 0.2 s,
and the first call of each kernel for a dtype compiles it (once per machine: ``cache=True``
keeps the machine code on disk). Every kernel is ``nogil``, so chunks and tensors are coded on
parallel threads.

The coder is F. Giesen's ``rans64``: ``LANES`` states of 64 bits, each in
``[L, L * 2**32)`` with ``L = 2**31``; symbol ``i`` of a chunk is coded by state ``i % LANES``.
Renormalisation moves whole 32-bit words, at most one per symbol. A symbol of frequency ``f``
and cumulative frequency ``c`` out of ``M = 2**n``:

    encode (last symbol first): if x >= f << (63 - n): emit x & 0xFFFFFFFF; x >>= 32
                                x = (x // f) * M + x % f + c
    decode (first symbol first): slot = x % M; s = the symbol with c <= slot < c + f
                                 x = f * (x >> n) + slot - c
                                 if x < L: x = x << 32 | the next word

The encoder divides by multiplying with a reciprocal (Alverson; exact for x < 2**63):
``x // f = mulhi(x, rcp) >> shift``, and ``x + bias + q * (M - f)`` is the new state.
It writes its words backwards so that the decoder reads them forwards, after the ``LANES``
final states (two words each, low word first). Decoding ends with every state back at ``L``
and every word read; a stream that does not is corrupt.

The kernels trust their arguments' shapes (numba does no bounds checks): ``rans`` builds and
validates every table and length first. A corrupt word stream stays in bounds here: the word
index is clamped to the stream and the slot masked into the table.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from quantcore.jit import intrinsic, njit, types

LANES = 8
LOW = 1 << 31
_L = np.uint64(LOW)
_MASK32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
# Columns of the encoder's table, one row per high part: x_max (0: absent), reciprocal,
# bias, and M - f in the low 32 bits with the reciprocal's shift above.
XMAX, RCP, BIAS, CMPL = 0, 1, 2, 3


@intrinsic
def _mulhi(typingctx, a, b):
    """The high 64 bits of the 128-bit product of two uint64."""
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))

    return sig, codegen


@njit(inline="always")
def _put(x, code, raw_bits, table, words, pos):
    """Encode one code into state ``x``; returns the state, the word position and whether the
    code's high part is absent from the table. ``raw_bits`` and ``pos`` are unsigned: a
    signed index is checked for a negative value to wrap around."""
    row = np.uintp(code) >> raw_bits
    x_max = table[row, XMAX]
    words[pos - np.uintp(1)] = np.uint32(x & _MASK32)  # kept only if the state overflows
    big = x >= x_max
    pos -= np.uintp(big)
    x = (x >> _32) if big else x
    cmpl = table[row, CMPL]
    q = _mulhi(x, table[row, RCP]) >> (cmpl >> _32)  # type: ignore[call-arg]
    return x + table[row, BIAS] + q * (cmpl & _MASK32), pos, x_max == 0


@njit(inline="always")
def flush_states(states, words, pos):
    """Write the ``LANES`` final states just below ``pos`` (two words each, lane 0 first,
    where the decoder reads them); returns where they start."""
    for lane in range(LANES - 1, -1, -1):
        pos -= 2
        words[pos] = np.uint32(states[lane] & _MASK32)
        words[pos + 1] = np.uint32(states[lane] >> _32)
    return pos


@_jit
def encode_chunk(codes, raw_bits, table, words, packed):
    """Code ``codes`` (uint8 or uint16) into the end of ``words`` (room for ``codes.size +
    2 * LANES``); pack their low ``raw_bits`` into ``packed`` (zeroed, ``ceil(n * raw_bits /
    8)`` bytes). ``table`` has a row for every possible high part ``code >> raw_bits``.

    Returns where the chunk's words start in ``words``, or -1 if a code's high part has no
    frequency (counts that are not the codes').
    """
    n = codes.size
    full = n - n % LANES
    states = np.full(LANES, _L, dtype=np.uint64)
    # Unsigned positions and indices (``_put``): 3.7 -> 3.1 ns a code on a Zen 4.
    pos, shift = np.uintp(words.size), np.uintp(raw_bits)
    bad = False
    for i in range(n - 1, full - 1, -1):
        states[i % LANES], pos, absent = _put(states[i % LANES], codes[i], shift, table,
                                              words, pos)  # fmt: skip
        bad |= absent
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    x4, x5, x6, x7 = states[4], states[5], states[6], states[7]
    one, two, three, four = np.uintp(1), np.uintp(2), np.uintp(3), np.uintp(4)
    five, six, seven = np.uintp(5), np.uintp(6), np.uintp(7)
    for group in range(np.uintp(full // LANES)):  # the last group of eight first
        g = np.uintp(full - LANES) - group * np.uintp(LANES)
        x7, pos, a7 = _put(x7, codes[g + seven], shift, table, words, pos)
        x6, pos, a6 = _put(x6, codes[g + six], shift, table, words, pos)
        x5, pos, a5 = _put(x5, codes[g + five], shift, table, words, pos)
        x4, pos, a4 = _put(x4, codes[g + four], shift, table, words, pos)
        x3, pos, a3 = _put(x3, codes[g + three], shift, table, words, pos)
        x2, pos, a2 = _put(x2, codes[g + two], shift, table, words, pos)
        x1, pos, a1 = _put(x1, codes[g + one], shift, table, words, pos)
        x0, pos, a0 = _put(x0, codes[g], shift, table, words, pos)
        bad |= a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7
    if bad:
        return -1
    states[0], states[1], states[2], states[3] = x0, x1, x2, x3
    states[4], states[5], states[6], states[7] = x4, x5, x6, x7
    pos = flush_states(states, words, np.int64(pos))
    if raw_bits:
        pack_low(codes, raw_bits, packed)
    return pos


@_jit
def pack_low(codes, raw_bits, packed):
    """The low ``raw_bits`` of each code, bit-packed as ``quantcore.coding.packing`` does
    (code i at stream bits [i*R, (i+1)*R), least significant bit first), four bytes at a
    time."""
    mask = np.uint64((1 << raw_bits) - 1)
    acc = np.uint64(0)
    filled = 0
    out = 0
    for i in range(codes.size):
        acc |= (np.uint64(codes[i]) & mask) << np.uint64(filled)
        filled += raw_bits
        if filled >= 32:
            for b in range(4):
                packed[out + b] = np.uint8((acc >> np.uint64(8 * b)) & np.uint64(0xFF))
            out += 4
            acc >>= _32
            filled -= 32
    while filled > 0:
        packed[out] = np.uint8(acc & np.uint64(0xFF))
        out += 1
        acc >>= np.uint64(8)
        filled -= 8


@njit(inline="always")
def _take(x, i, words, pos, last, mask, precision, entry, value, out):
    """Decode one symbol from state ``x`` into ``out[i]``; returns the state and the position
    of the next word."""
    slot = x & mask
    e = np.uint64(entry[slot])
    out[i] = value[slot]
    x = (e & np.uint64(0xFFFF)) * (x >> precision) + (e >> np.uint64(16))
    word = np.uint64(words[min(pos, last)])
    low = x < _L
    x = (x << _32 | word) if low else x
    return x, pos + np.int64(low)


@_jit
def decode_chunk(words, precision, entry, value, out, packed, raw_bits):
    """Decode ``out.size`` codes from ``words`` (at least ``2 * LANES``: the states first),
    with slot tables of ``2**precision`` entries, ``precision <= 16``: ``entry[slot] = f |
    (slot - c) << 16`` and ``value[slot]`` the symbol's high part shifted left by ``raw_bits``;
    then OR in the low bits from ``packed``. Returns True if the stream ended as it must."""
    n = out.size
    full = n - n % LANES
    mask = np.uint64((1 << precision) - 1)
    prec = np.uint64(precision)
    last = words.size - 1
    states = _initial_states(words)
    x0, x1, x2, x3 = states[0], states[1], states[2], states[3]
    x4, x5, x6, x7 = states[4], states[5], states[6], states[7]
    pos = 2 * LANES
    for g in range(0, full, LANES):
        x0, pos = _take(x0, g, words, pos, last, mask, prec, entry, value, out)
        x1, pos = _take(x1, g + 1, words, pos, last, mask, prec, entry, value, out)
        x2, pos = _take(x2, g + 2, words, pos, last, mask, prec, entry, value, out)
        x3, pos = _take(x3, g + 3, words, pos, last, mask, prec, entry, value, out)
        x4, pos = _take(x4, g + 4, words, pos, last, mask, prec, entry, value, out)
        x5, pos = _take(x5, g + 5, words, pos, last, mask, prec, entry, value, out)
        x6, pos = _take(x6, g + 6, words, pos, last, mask, prec, entry, value, out)
        x7, pos = _take(x7, g + 7, words, pos, last, mask, prec, entry, value, out)
    states[0], states[1], states[2], states[3] = x0, x1, x2, x3
    states[4], states[5], states[6], states[7] = x4, x5, x6, x7
    for i in range(full, n):
        states[i % LANES], pos = _take(states[i % LANES], i, words, pos, last, mask, prec,
                                       entry, value, out)  # fmt: skip
    if raw_bits:
        or_low(out, packed, raw_bits)
    return _ended(states, pos, words.size)


@_jit
def decode_chunk_wide(words, precision, coarse, bucket, cum, value, out, packed, raw_bits):
    """``decode_chunk`` for any precision up to 24 (used past 16, for wide alphabets): the
    symbol of a slot is found from ``bucket`` (for each ``slot >> coarse``, the first symbol
    it holds) by stepping along ``cum`` (``S + 1`` cumulative frequencies, the last
    ``2**precision``); ``value`` is indexed by symbol."""
    mask = np.uint64((1 << precision) - 1)
    prec = np.uint64(precision)
    last = words.size - 1
    states = _initial_states(words)
    pos = 2 * LANES
    for i in range(out.size):
        x = states[i % LANES]
        slot = x & mask
        s = bucket[slot >> coarse]
        while cum[s + 1] <= slot:
            s += 1
        out[i] = value[s]
        x = (np.uint64(cum[s + 1]) - np.uint64(cum[s])) * (x >> prec) + slot - cum[s]
        if x < _L:
            x = x << _32 | np.uint64(words[min(pos, last)])
            pos += 1
        states[i % LANES] = x
    if raw_bits:
        or_low(out, packed, raw_bits)
    return _ended(states, pos, words.size)


@_jit
def _initial_states(words):
    states = np.empty(LANES, dtype=np.uint64)
    for lane in range(LANES):
        states[lane] = np.uint64(words[2 * lane]) | np.uint64(words[2 * lane + 1]) << _32
    return states


@_jit
def or_low(out, packed, raw_bits):
    """OR the low bits unpacked from ``packed`` (exactly ``ceil(n * raw_bits / 8)`` bytes)
    into ``out``, reading four bytes at a time while four remain."""
    mask = np.uint64((1 << raw_bits) - 1)
    acc = np.uint64(0)
    filled = 0
    src = 0
    size = packed.size
    for i in range(out.size):
        if filled < raw_bits:
            if src + 4 <= size:
                word = np.uint64(packed[src]) | np.uint64(packed[src + 1]) << np.uint64(8)
                word |= np.uint64(packed[src + 2]) << np.uint64(16)
                word |= np.uint64(packed[src + 3]) << np.uint64(24)
                acc |= word << np.uint64(filled)
                src += 4
                filled += 32
            else:
                while filled < raw_bits and src < size:
                    acc |= np.uint64(packed[src]) << np.uint64(filled)
                    src += 1
                    filled += 8
        out[i] |= acc & mask
        acc >>= np.uint64(raw_bits)
        filled -= raw_bits


@_jit
def _ended(states, pos, size):
    ok = pos == size
    for lane in range(LANES):
        ok &= states[lane] == _L
    return ok


@_jit
def pack_nibbles(codes, add, out):
    """``out[j]``: the low nibbles of ``codes[2j] + add`` (low) and ``codes[2j + 1] + add``
    (high), as ONNX stores 4-bit tensors; ``out`` has ``ceil(codes.size / 2)`` bytes."""
    n = codes.size
    half = n // 2
    a = np.uint32(add)
    nib = np.uint32(0xF)
    for j in range(half):
        low = (np.uint32(codes[2 * j]) + a) & nib
        high = (np.uint32(codes[2 * j + 1]) + a) & nib
        out[j] = np.uint8(low | high << np.uint32(4))
    if n % 2:
        out[half] = np.uint8((np.uint32(codes[n - 1]) + a) & nib)
