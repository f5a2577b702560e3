"""Compiled chunk kernel for channels across the rows (a MatMul weight's output axis).

``stream_chunk`` (``kernels``) takes a block of channels as rows; a weight whose channels
run across its rows had to be copied to that layout and its codes and values copied back,
three strided passes that took half of such a job. This kernel walks the weight as it lies,
a row at a time (each row holds one weight of every channel of the block), and writes codes
and values in place. Per weight it makes the very operations of ``stream_chunk`` with the
channel's own ``gain/shift/scale/offset``, so codes, values, counts and the share within the
support are its bits. Only the errors are laid out channel by channel (``err[c, k]``, the
layout ``stream_chunk`` leaves them in), gathered over ``ERR_ROWS`` rows and written out a
channel at a time: the caller sums each block's squares with ``np.dot`` in the reference's
order. Written out every 16 rows, 64 bytes a channel into as many places as there are
channels (512 a call), each line was a miss of its own: a quarter of the kernel's time at
4096 x 4096. Gathered, they go out through 8 x 8 transposes in vector registers
(``transpose_kernel.transpose``): an element at a time, reading down the gathered rows, the
write-out was still a third of the kernel's time (0.026-0.034 of 0.08-0.09 s on 12207 x 4096).
Each row's segment is read once, a few hundred bytes with kilobytes between rows, which the
hardware's prefetchers do not follow: the segment ``AHEAD`` rows down is prefetched as a row
is read (``prefetch_kernel``; 12207 x 4096 on a Zen 4, 0.203 -> 0.167 s at 4 bits).
The table families (mu-law, log, minifloat) code a row at a time, reading each weight's code
and level at its index in the table, and count the codes where they were written.
"""

from __future__ import annotations

import numpy as np

from quantcore.quantizers.kernel_args import TABLE
from quantcore.quantizers.kernels import (
    _code_span,
    _count_codes,
    _inline,
    _jit,
    _merge_counts,
    _merge_pairs,
    _table_codes,
    _table_index,
    _table_levels,
    encode_values,
)
from quantcore.quantizers.prefetch_kernel import prefetch
from quantcore.quantizers.transpose_kernel import transpose

TILE = 16  # rows a tile: 64 bytes of float32 errors a channel, a cache line
AHEAD = 2 * TILE  # rows between a row's prefetch and its read
LINE = 16  # float32 weights a cache line
ERR_ROWS = 128  # rows of errors gathered before they go out: 512 bytes a channel


@_jit
def stream_across(w, lo, gain, shift, scale, offset, kind, limit, ratio, max_index, edge,
                  signbit, edges, table, lut, levels, mask, codes, deq, err, counts):
    """Channels ``lo:lo + gain.size`` of ``w`` (rows × channels, C-ordered: a channel's
    weights a row apart) into ``codes`` and ``deq`` (C-ordered, the shape of ``w``) and the
    errors into ``err`` (channels × rows); adds to ``counts``; returns the weights with
    float32 ``|t| ≤ edge``.

    The arrays are read flat with unsigned indices: indexed in two dimensions, or through a
    row's slice, the loops did not vectorise (2× the time)."""
    rows = w.shape[0]
    stride = np.uintp(w.shape[1])
    width = np.uintp(gain.size)
    start = np.uintp(lo)
    flat_w, flat_codes = w.reshape(-1), codes.reshape(-1)
    flat_deq, flat_err = deq.reshape(-1), err.reshape(-1)
    err_stride = np.uintp(err.shape[1])
    affine = levels.size == 0
    # A table's code and level are read at the value's index in the table, a row at a time
    # (``stream_chunk`` reads them so): a tile's codes looked up by the encoder, then each
    # level by its code, took 1.2x the time (mu-law 8 bits, 12207 x 4096 on a Zen 4).
    fused = kind == TABLE and not affine
    stored = _table_codes(kind, table, codes)
    level_at = _table_levels(stored, levels, stored.size if fused else 0)
    inside = 0
    lowest, nibbles = _code_span(kind, limit, max_index, stored)  # tables of 16 codes: pairs
    part = np.zeros((4, 256 if nibbles else counts.size), np.int64)
    single = np.zeros(16, np.int64)
    # A tile of rows at a time: ``t``, its codes and its errors, one encoder call a tile
    # (tables: one row at a time).
    t = np.empty(TILE * gain.size, err.dtype)
    tile_codes = np.empty(TILE * gain.size, codes.dtype)
    tile = np.empty(min(ERR_ROWS, rows) * gain.size, err.dtype)  # errors, row by row
    gathered = 0  # the first row of ``tile``
    for k0 in range(0, rows, TILE):
        span = min(TILE, rows - k0)
        for j in range(span):
            at, row = np.uintp(j) * width, np.uintp(k0 + j) * stride + start
            if k0 + j + AHEAD < rows:  # the segment AHEAD rows down: its first and last line
                ahead = row + np.uintp(AHEAD) * stride
                for i in range(np.uintp(0), width, np.uintp(LINE)):
                    prefetch(flat_w, ahead + i)  # type: ignore[call-arg]
                prefetch(flat_w, ahead + width - np.uintp(1))  # type: ignore[call-arg]
            for i in range(width):
                v = flat_w[row + i] * gain[i] + shift[i]
                t[at + i] = v
                inside += np.float32(abs(v)) <= edge
            if fused:  # a row's codes, values and errors as the loop below makes them
                kept = np.uintp(k0 + j - gathered) * width
                for i in range(width):
                    k = _table_index(t[at + i], signbit, edges, lut)
                    c = stored[k]
                    v = level_at[k] * scale[i] + offset[i]
                    flat_codes[row + i] = c
                    flat_deq[row + i] = v
                    tile[kept + i] = flat_w[row + i] - v
                _count_codes(flat_codes[row : row + width], part, single, nibbles, mask)
        if not fused:
            _encode_tile(flat_w, t, tile_codes, tile, k0, span, gathered, stride, start,
                         width, scale, offset, affine, kind, limit, ratio, max_index,
                         signbit, edges, table, lut, levels, flat_codes, flat_deq)  # fmt: skip
            _count_codes(tile_codes[: span * gain.size], part, single, nibbles, mask)
        held = k0 + span - gathered
        if held + TILE > ERR_ROWS or k0 + span >= rows:  # no room for another tile: out
            # Rows 0:held of the tile into each channel's row of errors, from column gathered.
            transpose(tile, 0, width, flat_err, gathered, err_stride, held, width)
            gathered = k0 + span
    if nibbles:
        _merge_pairs(part, single, lowest, mask, counts)
    else:
        _merge_counts(part, counts)
    return inside


@_inline
def _encode_tile(flat_w, t, tile_codes, tile, k0, span, gathered, stride, start, width, scale,
                 offset, affine, kind, limit, ratio, max_index, signbit, edges, table, lut,
                 levels, flat_codes, flat_deq):
    """Rows ``k0:k0 + span`` of ``t`` coded in one encoder call, then their codes, values
    and errors (the formulas' families, and a table's codes looked up by the family's
    encoder)."""
    n = span * width
    encode_values(t[:n], tile_codes[:n], kind, limit, ratio, max_index, signbit, edges,
                  table, lut)  # fmt: skip
    for j in range(span):
        at, row = np.uintp(j) * width, np.uintp(k0 + j) * stride + start
        kept = np.uintp(k0 + j - gathered) * width
        if affine:
            for i in range(width):
                c = tile_codes[at + i]
                v = np.float32(c) * scale[i] + offset[i]
                flat_codes[row + i] = c
                flat_deq[row + i] = v
                tile[kept + i] = flat_w[row + i] - v
        else:
            for i in range(width):
                c = tile_codes[at + i]
                v = levels[c] * scale[i] + offset[i]
                flat_codes[row + i] = c
                flat_deq[row + i] = v
                tile[kept + i] = flat_w[row + i] - v
