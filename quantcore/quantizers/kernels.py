"""Compiled one-pass chunk kernel of ``quantcore.quantizers.stream`` (layer and channel paths).

One call per chunk computes, per weight, exactly what the NumPy chunk (the reference:
``_Kernel.chunk`` with ``USE_KERNELS`` off) computes in seven array operations, in three short
loops over the chunk while it is in cache: ``t = w·gain + shift`` and the share within the
support; the codes; the dequantized weight, the error ``w - ŵ`` (into a scratch buffer: its
sum of squares is left to ``np.dot``, so the noise is summed in the very order of the
reference) and the code counts. Every operation is the same
IEEE operation in the same precision, one rounding each (no fast-math, no fused multiply-add),
so codes, dequantized weights and statistics are bit for bit the reference's.

Families: midrise, midtread and dead-zone by their formulas; mu-law, exponential and
minifloat through their breakpoint tables (``quantcore.quantizers.breakpoints``).

numba compiles each kernel on its first call for a dtype (about a second; ``cache=True`` keeps
the machine code on disk, so later processes load it in milliseconds).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from quantcore.jit import intrinsic, njit, types
from quantcore.quantizers.breakpoints import BUCKETS
from quantcore.quantizers.kernel_args import DEADZONE_INDEX, MIDRISE, SIGNED_DEADZONE, TABLE

_jit = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
# Helpers called per weight are inlined by numba itself: a call that passes arrays would
# count references on every weight.
_inline = njit(nogil=True, cache=True, boundscheck=False, error_model="numpy", inline="always")


@intrinsic
def _bits32(typingctx, x):
    """The bit pattern of a float32 as a uint32."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _float32_of(typingctx, x):
    """The float32 whose bit pattern is the low 32 bits of an int64."""
    sig = types.float32(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())

    return sig, codegen


@_inline
def _midrise(t, limit):
    negative = t < 0
    if t > limit:
        t = limit
    elif t < -limit:
        t = -limit
    # The cast truncates toward zero: floor for t ≥ 0, ceil for t < 0, then ceil - 1. The
    # clamped t fits an int32 (``limit`` ≤ 2^15), whose truncation is the int64 one; the
    # compiler vectorises it on AVX2, where the int64 one is a scalar conversion a value
    # (4× the time of the codes' loop on a Zen 3).
    return np.int32(t) - np.int32(1 if negative else 0)


@_inline
def _deadzone(t, ratio, max_index, index):
    """0 below ``ratio``, else ``min(floor(|t| - ratio) + 1, max_index)``, signed; ``index``:
    the dead-zone design's codebook index instead (no zero code when ``ratio`` is 0)."""
    m = abs(t)
    if m < ratio:
        code = 0
    else:
        f = np.floor(m - ratio)
        code = max_index if f >= max_index - 1 else int(np.int32(f)) + 1  # as in _midrise
    if t < 0:
        code = -code
    if index:
        if ratio == 0 and code > 0:
            code -= 1
        code += max_index
    return code


@_inline
def _table(t, signbit, edges, codes, lut):
    """The code of ``t`` from a ``CodeTable`` (see ``quantcore.quantizers.breakpoints``)."""
    return codes[_table_index(t, signbit, edges, lut)]


@_inline
def _table_index(t, signbit, edges, lut):
    """The index of ``t``'s code in a ``CodeTable``'s codes."""
    negative = math.copysign(1.0, t) < 0 if signbit else t < 0
    m = abs(t)
    entry = lut[(BUCKETS if negative else 0) + (_bits32(np.float32(m)) >> 16)]  # type: ignore[call-arg]
    # One step on the bucket's first edge, held in the entry: two dependent loads a value
    # where reading it from ``edges`` and checking the next made four (2x as fast). A flagged
    # bucket (entry < 0, its edge NaN) is stepped through in ``edges``. A loop, not a branch
    # around it: numba then counts the arrays' references on every value.
    k = (entry >> 32) & 0x7FFFFFFF
    k += _float32_of(entry) <= m
    while entry < 0 and edges[k] <= m:
        k += 1
    return k


@_jit
def encode_values(t, out, kind, limit, ratio, max_index, signbit, edges, table, lut):
    """Codes of ``t`` (1-D, in the family's unit) into ``out``, as the family's ``encode``."""
    n = t.size
    if kind == MIDRISE:
        for i in range(n):
            out[i] = _midrise(t[i], limit)
    elif kind == TABLE:
        for i in range(n):
            out[i] = _table(t[i], signbit, edges, table, lut)
    else:
        index = kind == DEADZONE_INDEX
        for i in range(n):
            out[i] = _deadzone(t[i], ratio, max_index, index)


@_jit
def add_counts(codes, counts, mask):
    """``counts[code & mask] += 1`` for each code (1-D); four tables break the dependency
    between neighbours that share a code."""
    part = np.zeros((4, counts.size), np.int64)
    _count_into(codes, part, mask)
    _merge_counts(part, counts)


@_jit
def add_narrow_counts(codes, counts, lowest, mask):
    """``add_counts`` of codes within ``[lowest, lowest + 15]``, two at a time by their pair of
    nibbles (``_count_pairs``): a handful of 4-bit codes hit the same few counters, each
    increment waiting for the last (16M codes in groups of 32: 15 -> 5 ms)."""
    pairs = np.zeros((4, 256), np.int64)
    single = np.zeros(16, np.int64)
    _count_pairs(codes, pairs, single)
    _merge_pairs(pairs, single, lowest, mask, counts)


@_inline
def _count_into(codes, part, mask):
    """Eight codes an iteration, two into each table: four an iteration took 2.8 ns a code
    on a Zen 1, eight 0.43 (the same increments). Each index is the code's two's-complement
    bits as an unsigned integer under ``mask``: a signed index makes numba check it for a
    negative one first (8-bit codes on a Zen 5: 0.34 ns a code signed, 0.21 unsigned)."""
    n = codes.size
    octets = n - n % 8
    um = np.uintp(mask)
    for i in range(0, octets, 8):
        part[0, np.uintp(codes[i]) & um] += 1
        part[1, np.uintp(codes[i + 1]) & um] += 1
        part[2, np.uintp(codes[i + 2]) & um] += 1
        part[3, np.uintp(codes[i + 3]) & um] += 1
        part[0, np.uintp(codes[i + 4]) & um] += 1
        part[1, np.uintp(codes[i + 5]) & um] += 1
        part[2, np.uintp(codes[i + 6]) & um] += 1
        part[3, np.uintp(codes[i + 7]) & um] += 1
    for i in range(octets, n):
        part[0, np.uintp(codes[i]) & um] += 1


@_inline
def _merge_counts(part, counts):
    for k in range(counts.size):
        counts[k] += part[0, k] + part[1, k] + part[2, k] + part[3, k]


@_inline
def _lowest_code(kind, limit, max_index):
    """The lowest code of the family's encoder, and whether its codes span at most 16
    values (one nibble tells them apart): midrise ``[-limit-1, limit]``, midtread
    ``[-max_index, max_index]``, dead-zone index ``[0, 2·max_index]``; a table: not said
    here (``_code_span`` reads it off the table's codes)."""
    if kind == MIDRISE:
        return -int(limit) - 1, int(limit) <= 7
    if kind == SIGNED_DEADZONE:
        return -max_index, max_index <= 7
    if kind == DEADZONE_INDEX:
        return 0, max_index <= 7
    return 0, False


@_inline
def _table_codes(kind, table, codes):
    """A table's codes as ``codes`` (an array of the codes' dtype) holds them; none but for
    ``TABLE``."""
    stored = np.empty(table.size if kind == TABLE else 0, codes.dtype)
    for k in range(stored.size):
        stored[k] = table[k]
    return stored


@_inline
def _table_levels(stored, levels, size):
    """The levels (``levels[code]``) of the first ``size`` of a table's codes ``stored``
    (``_table_codes``): a value's level read at its index in the table."""
    level_at = np.empty(size, levels.dtype)
    for k in range(size):
        level_at[k] = levels[stored[k]]
    return level_at


@_inline
def _code_span(kind, limit, max_index, stored):
    """``_lowest_code``, a table's read off its codes ``stored`` (``_table_codes``)."""
    if kind == TABLE and stored.size > 0:
        low = int(stored.min())
        return low, int(stored.max()) - low <= 15
    return _lowest_code(kind, limit, max_index)


@_inline
def _count_pairs(codes, pairs, single):
    """Codes of at most 16 values counted two at a time, by their pair of nibbles: half the
    increments of ``_count_into``, the part of a 4-bit chunk's time it took (0.6 of 1.7 ns a
    weight on a Zen 3)."""
    n = codes.size
    octets = n - n % 8
    nib, four = np.uintp(15), np.uintp(4)  # a nibble, its shift: unsigned, as in ``_count_into``
    for i in range(0, octets, 8):
        pairs[0, (np.uintp(codes[i]) & nib) | (np.uintp(codes[i + 1]) & nib) << four] += 1
        pairs[1, (np.uintp(codes[i + 2]) & nib) | (np.uintp(codes[i + 3]) & nib) << four] += 1
        pairs[2, (np.uintp(codes[i + 4]) & nib) | (np.uintp(codes[i + 5]) & nib) << four] += 1
        pairs[3, (np.uintp(codes[i + 6]) & nib) | (np.uintp(codes[i + 7]) & nib) << four] += 1
    for i in range(octets, n):
        single[np.uintp(codes[i]) & nib] += 1


@_inline
def _merge_pairs(pairs, single, lowest, mask, counts):
    """``_count_pairs``' tables into ``counts``: nibble ``v`` is the code in
    ``[lowest, lowest + 15]`` whose low 4 bits are ``v``."""
    for k in range(256):
        both = pairs[0, k] + pairs[1, k] + pairs[2, k] + pairs[3, k]
        single[k & 15] += both
        single[k >> 4] += both
    for v in range(16):
        counts[(lowest + ((v - lowest) & 15)) & mask] += single[v]


@_jit
def stream_chunk(w, gain, shift, scale, offset, kind, limit, ratio, max_index, edge,
                 signbit, edges, table, lut, levels, mask, codes, deq, err, counts):
    """Rows of ``w`` (rows × per) with one ``gain/shift/scale/offset`` per row into ``codes``,
    ``deq`` and ``err``; adds to ``counts``; returns the weights with float32 ``|t| ≤ edge``.
    ``err`` holds ``t`` until the codes are chosen."""
    rows, per = w.shape
    affine = levels.size == 0
    inside = 0
    # A table's codes and their values are read in the codes' loop at the same index: a loop
    # of its own looking each value up by its code took 1.65 of mu-law's 5.5 ns a weight.
    fused = kind == TABLE and not affine
    stored = _table_codes(kind, table, codes)
    values = np.empty(stored.size if fused else 0, np.float32)
    lowest, nibbles = _code_span(kind, limit, max_index, stored)  # tables of 16 codes: pairs
    # One set of partial counts for the chunk: allocated and merged per row, they cost 5-7% of
    # a uniform chunk's time at rows of 4096.
    part = np.zeros((4, 256 if nibbles else counts.size), np.int64)
    single = np.zeros(16, np.int64)
    for r in range(rows):
        g, s, sc, off = gain[r], shift[r], scale[r], offset[r]
        t = err[r]
        for i in range(per):
            v = w[r, i] * g + s
            t[i] = v
            inside += np.float32(abs(v)) <= edge
        if fused:
            moved = r == 0 or _bits32(sc) != _bits32(scale[r - 1])  # type: ignore[call-arg]
            moved = moved or _bits32(off) != _bits32(offset[r - 1])
            if moved:  # a new scale or offset, by its bits (-0.0 is not 0.0 here)
                for k in range(values.size):  # as the loop below computed them, bit for bit
                    values[k] = levels[stored[k]] * sc + off
            _table_values(w[r], t, codes[r], deq[r], signbit, edges, stored, lut, values)
            _count_codes(codes[r], part, single, nibbles, mask)
            continue
        encode_values(t, codes[r], kind, limit, ratio, max_index, signbit, edges, table, lut)
        if affine:
            for i in range(per):
                v = np.float32(codes[r, i]) * sc + off
                deq[r, i] = v
                t[i] = w[r, i] - v
        else:
            for i in range(per):
                v = levels[codes[r, i]] * sc + off
                deq[r, i] = v
                t[i] = w[r, i] - v
        _count_codes(codes[r], part, single, nibbles, mask)
    if nibbles:
        _merge_pairs(part, single, lowest, mask, counts)
    else:
        _merge_counts(part, counts)
    return inside


@_inline
def _count_codes(codes, part, single, nibbles, mask):
    """A row's codes into the chunk's partial counts, by pairs where they span 16 values."""
    if nibbles:
        _count_pairs(codes, part, single)
    else:
        _count_into(codes, part, mask)


@_inline
def _table_values(w, t, codes, deq, signbit, edges, stored, lut, values):
    """A row's table codes, their values ``levels[code]·scale + offset`` (``values``, by the
    code's index in the table) and errors ``w - value`` into ``codes``, ``deq`` and ``t``."""
    for i in range(t.size):
        k = _table_index(t[i], signbit, edges, lut)
        codes[i] = stored[k]
        v = values[k]
        deq[i] = v
        t[i] = w[i] - v


@_jit
def sample_errors(rows, pick, gain, scale, offset, kind, limit, ratio, max_index, signbit,
                  edges, table, lut, levels, codes, err):
    """Row ``pick[k]`` of ``rows`` (float32 samples) quantized with ``gain/scale/offset[k]``:
    its errors ``float64(x - ŵ)`` into ``err[k]``, as ``quantize`` and the MSE support
    measure them (``t = x·gain - 0.0``, ``ŵ = value·scale + offset``)."""
    n = rows.shape[1]
    affine = levels.size == 0
    tf = np.empty(n, rows.dtype)
    # A table's levels by index in it: each value's level read at its index, as
    # ``stream_chunk`` reads it (the codes, then each level by its code: 1.2x the time).
    stored = _table_codes(kind if not affine else -1, table, codes)
    level_at = _table_levels(stored, levels, stored.size)
    for k in range(pick.size):
        x = rows[pick[k]]
        t = err[k]
        g, sc, off = gain[k], scale[k], offset[k]
        if kind == MIDRISE and affine:
            _midrise_errors(x, g, sc, off, limit, t)
            continue
        for i in range(n):
            tf[i] = x[i] * g + np.float32(-0.0)
        if stored.size > 0:
            for i in range(n):
                v = level_at[_table_index(tf[i], signbit, edges, lut)] * sc + off
                t[i] = np.float64(x[i] - v)
            continue
        encode_values(tf, codes, kind, limit, ratio, max_index, signbit, edges, table, lut)
        for i in range(n):
            v = np.float32(codes[i]) * sc + off if affine else levels[codes[i]] * sc + off
            t[i] = np.float64(x[i] - v)


@_inline
def _midrise_errors(x, g, sc, off, limit, out):
    """The affine midrise case of ``sample_errors`` in one loop the compiler vectorises
    (``_midrise`` truncates through int32); the code's float32 value is the stored code's."""
    for i in range(x.size):
        code = _midrise(x[i] * g + np.float32(-0.0), limit)
        out[i] = np.float64(x[i] - (np.float32(code) * sc + off))


@_jit
def sort_small_range(values, bound):
    """``np.sort(values)`` for integers in ``[0, bound)``, ``bound ≤ 2^32``: two counting
    passes of 16 bits (stable LSD radix), linear in ``values.size`` and exact."""
    out = np.empty_like(values)
    tmp = np.empty_like(values)
    src, dst = values, tmp
    passes = 1 if bound <= 1 << 16 else 2
    for p in range(passes):
        shift = 16 * p
        counts = np.zeros((1 << 16) + 1, np.int64)
        for v in src:
            counts[((v >> shift) & 0xFFFF) + 1] += 1
        for k in range(1 << 16):
            counts[k + 1] += counts[k]
        target = out if p == passes - 1 else dst
        for v in src:
            d = (v >> shift) & 0xFFFF
            target[counts[d]] = v
            counts[d] += 1
        src = target
    return out
