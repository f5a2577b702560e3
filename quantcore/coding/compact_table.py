"""The frequency tables of trellis streams v10 to v13: frequencies on a log scale, coded with
v4's adaptive binary coder.

A v7/v8 table stores each context's frequencies as uint32 byte planes in a zstd frame: on
the real models' trellis packages at 22-34 dB of weight SQNR, 0.6-1.2% of the code bytes, and
more than the magnitude classes' rows (``K`` = 8) save on most tensors. Here a frequency is
one of a few values per octave (``STEPS``: ``floor(2^(16 + q/s)) >> 16``, distinct, below
``2**precision``), its index coded as the difference from the row's entry before; each row
lists only the symbols its quantizer can hold (TCQ's ``Q0``: even levels; ``Q1``: odd
levels and zero), and the row's first largest entry takes what is left of ``2**precision``,
so every row sums to it exactly. Rounding a frequency within a factor ``2^(1/2s)`` costs
about ``(ln 2 / 2s)^2 / 6`` nats a code; the encoder takes whichever of ``STEPS`` makes the
stream smallest, tables included. The values are computed with integers only, so the
encoder and decoder agree on every machine.

Layout: ``code_min`` (int32), ``K`` (uint8), ``s`` (uint8), flags (uint8: bit 0 the coded
values are 16-bit, bit 1 level 0 is one of the symbols, so that the decoder knows how many
values there are: each symbol is on one quantizer's rows, level 0 on both), the mode of the
coded values (uint16), then v4's range coder bytes of the values:
the first symbol, each next symbol's distance from the one before minus 1, then each row's
entries (``0`` absent, else the value's index plus 1) as zigzagged differences from the entry
before in the row (``0`` before the first).
"""

from __future__ import annotations

import functools
import struct
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding.symbols import CodeArray
from quantcore.errors import InvalidPackageError

STEPS = (2, 4, 8, 16, 32)  # values per octave the encoder chooses among
MAX_STEPS = 64  # what the decoder accepts (any s is well defined)
_HEAD = struct.Struct("<iBBBH")
_WIDE, _ZERO = 1, 2  # flags: the values are 16-bit; level 0 is one of the symbols
_MANTISSA_BITS = 16


def _table_kernels() -> ModuleType:
    from quantcore.coding import compact_kernels

    return compact_kernels


def _adaptive_kernels() -> ModuleType:
    from quantcore.coding import adaptive_kernels

    return adaptive_kernels


def _encode_values(values: CodeArray, mode: int) -> bytes:
    """The range coder's bytes of ``values`` (at least one), binarised around ``mode`` as
    v4's codes (``quantcore.coding.adaptive``), with no header: the table stores the mode,
    and the count follows from the symbols."""
    kernels = _adaptive_kernels()
    out = np.zeros(72 * values.size + kernels.SLACK, np.uint8)
    end = kernels.encode(values, mode, out)
    return out[1:end].tobytes()  # LZMA's first byte is always zero


def _root(value: int, n: int) -> int:
    """``floor(value ** (1 / n))`` of a positive integer, exactly."""
    low, high = 1, 1 << (value.bit_length() // n + 1)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if mid**n <= value else (low, mid)
    return low


@functools.cache
def frequency_values(steps: int, precision: int) -> npt.NDArray[np.int64]:
    """The frequencies a table of ``steps`` values an octave can hold at ``precision``:
    the distinct ``floor(2^(16 + q/steps)) >> 16`` below ``2**precision``, increasing."""
    mantissas = [_root(1 << (_MANTISSA_BITS * steps + i), steps) for i in range(steps)]
    values = {
        (mantissas[q % steps] << (q // steps)) >> _MANTISSA_BITS
        for q in range(steps * precision)
    }
    return np.array(sorted(v for v in values if 1 <= v < 1 << precision), np.int64)


def allowed(symbols: npt.NDArray[np.int64], code_min: int) -> list[npt.NDArray[np.bool_]]:
    """The symbols each quantizer's rows list: ``Q0`` even levels, ``Q1`` odd levels and 0."""
    levels = symbols + code_min
    return [levels % 2 == 0, (levels % 2 == 1) | (levels == 0)]


def quantized_row(
    counts: npt.NDArray[np.int64], values: npt.NDArray[np.int64], precision: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A row's frequencies summing to ``2**precision`` and their entries (0: absent, else the
    value's index + 1): each present count's nearest value on the log scale, the first largest
    entry taking the rest. Zero counts: a row of zeros."""
    total = 1 << precision
    present = counts > 0
    entries = np.zeros(counts.size, np.int64)
    freqs = np.zeros(counts.size, np.int64)
    if not present.any():
        return freqs, entries
    ideal = counts[present] * (total / counts.sum())
    above = np.minimum(np.searchsorted(values, ideal), values.size - 1)
    below = np.maximum(above - 1, 0)
    nearer = np.log(ideal / values[below]) < np.log(values[above] / ideal)
    entries[present] = np.where(nearer, below, above) + 1
    while True:
        freqs = np.where(entries > 0, values[np.maximum(entries - 1, 0)], 0)
        rest = int(np.argmax(entries))
        left = total - int(freqs.sum()) + int(freqs[rest])
        # Where the others take too much (rare, at low precision), the largest of them goes a
        # step down (never to absent).
        others = np.where((np.arange(entries.size) != rest) & (entries > 1), entries, 0)
        if left >= max(1, int(freqs[rest]) // 2) or not others.any():
            break
        entries[int(np.argmax(others))] -= 1
    if left < 1:
        raise AssertionError("a row whose other symbols fill its whole precision")
    freqs[rest] = left
    return freqs, entries


def quantized(
    counts: npt.NDArray[np.int64], precision: int, steps: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], float]:
    """Every row's ``quantized_row``: the frequencies, the entries, and the bits the counts
    take under those frequencies."""
    values = frequency_values(steps, precision)
    freqs = np.zeros_like(counts)
    entries = np.zeros_like(counts)
    bits = 0.0
    for row in range(counts.shape[0]):
        freqs[row], entries[row] = quantized_row(counts[row], values, precision)
        present = counts[row] > 0
        bits += float((counts[row, present] * (precision - np.log2(freqs[row, present]))).sum())
    return freqs, entries, bits


def encode(
    code_min: int, k_classes: int, steps: int, symbols: npt.NDArray[np.intp],
    entries: npt.NDArray[np.int64],
) -> bytes:
    """The table of ``symbols`` and the rows' ``entries`` (``quantized_row``'s, one row a
    context ``quantizer · K + class``)."""
    symbols = symbols.astype(np.int64)
    sides = allowed(symbols, code_min)
    parts = [np.r_[symbols[0], np.diff(symbols) - 1]]
    for row, row_entries in enumerate(entries):
        side = sides[row // k_classes]
        if row_entries[~side].any():
            raise AssertionError("a count off its quantizer's levels: codes off the path")
        listed = row_entries[side]
        diffs = np.diff(listed, prepend=0)
        parts.append(np.where(diffs >= 0, 2 * diffs, -2 * diffs - 1))
    values = np.concatenate(parts)
    wide = int(values.max()) > 0xFF
    codes: CodeArray = values.astype(np.uint16) if wide else values.astype(np.uint8)
    mode = int(np.argmax(np.bincount(codes)))
    payload = _encode_values(codes, mode)
    flags = (_WIDE if wide else 0) | (_ZERO if -code_min in symbols else 0)
    return _HEAD.pack(code_min, k_classes, steps, flags, mode) + payload


def decode(
    table: memoryview, n_symbols: int, width: int, precision: int, max_classes: int
) -> tuple[int, int, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``code_min``, K, the symbols and the rows of frequencies of a table, checked."""
    if len(table) < _HEAD.size:
        raise InvalidPackageError("entropy stream trellis table is truncated")
    code_min, k_classes, steps, flags, mode = _HEAD.unpack_from(table)
    if (not 1 <= k_classes <= max_classes or not 1 <= steps <= MAX_STEPS
            or flags & ~(_WIDE | _ZERO) or mode >= 1 << (16 if flags & _WIDE else 8)):  # fmt: skip
        raise InvalidPackageError(
            f"entropy stream trellis table has {k_classes=}, {steps=}, {flags=}, {mode=}"
        )
    # Every symbol is on one quantizer's rows, level 0 on both: that says how many values.
    count = n_symbols + k_classes * (n_symbols + (1 if flags & _ZERO else 0))
    symbols = np.empty(n_symbols, np.int64)
    freqs = np.zeros((2 * k_classes, n_symbols), np.int64)
    payload = np.frombuffer(table[_HEAD.size :], dtype=np.uint8)
    kernels = _table_kernels()
    status = kernels.decode_table(
        payload, mode, 0xFFFF if flags & _WIDE else 0xFF, count, code_min,
        bool(flags & _ZERO), (1 << width) - 1, k_classes, frequency_values(steps, precision),
        precision, symbols, freqs,
    )  # fmt: skip
    if status == kernels.VALUES_CORRUPT:
        raise InvalidPackageError("entropy stream trellis table's values do not decode")
    if status == kernels.SYMBOLS_CORRUPT:
        raise InvalidPackageError("entropy stream trellis table's symbols are corrupt")
    if status:
        raise InvalidPackageError("entropy stream trellis table has a corrupt row")
    return int(code_min), int(k_classes), symbols, freqs
