"""Stream ``QENT`` version 3: rANS under per-context frequency tables, the context of a code
being the magnitude class of the two codes before it (``quantcore.coding.context_kernels``).

Weights are locally correlated in magnitude (a filter's large weights come together), which
an order-0 model cannot see. Here the model of each high part is one of ``K`` tables, chosen
by ``class(d1 + d2)`` where ``d1``, ``d2`` are the distances of the two previous high parts
of the same lane from the most frequent one. ``encode`` writes v3 only where it beats v2 by
``MIN_GAIN`` (tables included); otherwise it returns None and the caller writes v2.

Layout: the v2 header (``symbols.HEADER``) with version 3 and the precision shared by every
context (at most ``MAX_PRECISION``, 16); the table is a zstd frame of ``K`` (uint16), the mode's
index among the symbols (uint16), the symbols as uint16 deltas (byte planes) and ``K`` rows of
uint32 frequencies over the symbols (byte planes), each row summing to ``2**precision`` or
all zero (a context never met); then the chunks as in v2: their word counts, and each
chunk's words (the ``LANES`` final states first) and packed low bits.
"""

from __future__ import annotations

import functools
import struct
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

from quantcore.coding import rans, rans_chunks
from quantcore.coding.parallel import run_all
from quantcore.coding.symbols import (
    MAGIC,
    CodeArray,
    chunk_sizes,
    raw_low_bits,
    seal,
)
from quantcore.errors import InvalidPackageError, InvalidSpecError

VERSION = 3
CONTEXTS = 8  # K: classes 0, 1, 2-3, 4-7, ..., 64+ of d1 + d2
MIN_GAIN = 2e-3  # v3 is written only if it saves this share of v2's size
MIN_CODES = 1 << 14  # and for at least this many codes (below, the tables weigh too much)
SAMPLE = 1 << 20  # codes on which the gain is first estimated
CHUNK_SYMBOLS = rans.CHUNK_SYMBOLS
LANES = 8
MAX_PRECISION = 16  # the decoder's slot tables: (K, 2**precision)
PRECISION_TOLERANCE = 2e-4  # a smaller precision is taken if it costs no more than this
MIN_PRECISION = 8


def kernels() -> ModuleType:
    """The compiled kernels, imported (and numba with them) on first use; Python keeps
    the module once imported."""
    from quantcore.coding import context_kernels

    return context_kernels


def encode(
    flat: CodeArray, counts: npt.NDArray[np.int64], threads: int | None, *, force: bool = False
) -> bytes | None:
    """The v3 stream of ``flat`` (whose bincount is ``counts``), or None when it would not
    beat v2 by ``MIN_GAIN`` (``force``: written anyway, if there is anything to model)."""
    if flat.size < MIN_CODES and not force:
        return None
    raw_bits = raw_low_bits(counts)
    high_counts = counts.reshape(-1, 1 << raw_bits).sum(axis=1)
    symbols = np.flatnonzero(high_counts)
    if symbols.size < 2:
        return None
    mode_index = int(np.argmax(high_counts[symbols]))
    mode = int(symbols[mode_index])
    classes = class_table(CONTEXTS)
    if not force and not _promising(flat, raw_bits, mode, classes):
        return None
    table_counts = _context_counts(flat, raw_bits, mode, classes, threads)[:, symbols]
    table_counts = np.ascontiguousarray(table_counts)
    pooled_precision, pooled_freqs = rans.choose_precision(
        high_counts[symbols], raw_bits * flat.size
    )
    # K tables of 2**precision slots cost the decoder time to build: at most a quarter of the
    # codes' number (a small tensor gets small tables).
    cap = max(MIN_PRECISION, (flat.size // (4 * CONTEXTS)).bit_length() - 1)
    precision, freqs, context_bits = _choose_precision(
        table_counts, raw_bits * flat.size, min(cap, MAX_PRECISION)
    )
    table = _encode_table(symbols, mode_index, freqs)
    pooled_bits = rans._cost(high_counts[symbols], pooled_freqs, pooled_precision)
    v2_table = rans.encode_table(symbols, pooled_freqs, 4)
    low_bytes = raw_bits * flat.size / 8  # the same in both
    v3_bytes = context_bits / 8 + len(table) + low_bytes
    if not force and v3_bytes > (1 - MIN_GAIN) * (pooled_bits / 8 + len(v2_table) + low_bytes):
        return None
    bits = 8 * flat.itemsize - raw_bits
    rows = np.stack([_rows(symbols, freqs[c], precision, bits) for c in range(CONTEXTS)])
    starts = range(0, flat.size, CHUNK_SYMBOLS)

    def one(start: int) -> tuple[memoryview, memoryview]:
        part = flat[start : start + CHUNK_SYMBOLS]
        packed = np.zeros(rans.packed_size(part.size, raw_bits), dtype=np.uint8)
        words = np.empty(part.size + 2 * LANES, dtype=np.uint32)
        begin = kernels().encode_chunk(part, raw_bits, mode, classes, rows, words, packed)
        if begin < 0:
            raise InvalidSpecError("the counts given are not the codes' bincount")
        if raw_bits:
            rans.kernels().pack_low(part, raw_bits, packed)
        return memoryview(words[begin:].astype("<u4", copy=False).tobytes()), packed.data

    pieces = run_all(one, starts, threads)
    width = 8 if not counts[256:].any() else 16
    lengths = np.array([len(words) // 4 for words, _ in pieces], dtype="<u4")
    fields = (MAGIC, VERSION, width, raw_bits, precision, flat.size, symbols.size, CHUNK_SYMBOLS)
    body: list[bytes | memoryview] = [table, lengths.tobytes()]
    body += [piece for pair in pieces for piece in pair]
    return seal((*fields, len(table), len(pieces)), body)


def _choose_precision(
    counts: npt.NDArray[np.int64], extra_bits: int, most: int
) -> tuple[int, npt.NDArray[np.int64], float]:
    """The smallest precision (up to ``most``) whose cost is within ``PRECISION_TOLERANCE``
    of ``most``'s (small tables decode faster: ``K`` of them), its frequencies (each
    context's row) and its cost in bits."""

    def at(precision: int) -> tuple[npt.NDArray[np.int64], float]:
        freqs = np.zeros_like(counts)
        bits = 0.0
        for c in range(counts.shape[0]):
            present = counts[c] > 0
            if present.any():
                freqs[c, present] = rans._freqs(counts[c, present], precision)
                bits += rans._cost(counts[c, present], freqs[c, present], precision)
        return freqs, bits

    lowest = max(1, (counts.shape[1] - 1).bit_length())  # a slot for every symbol
    most = max(most, lowest)
    best_freqs, best_bits = at(most)
    budget = best_bits + PRECISION_TOLERANCE * (best_bits + extra_bits)
    for precision in range(lowest, most):
        freqs, bits = at(precision)
        if bits <= budget:
            return precision, freqs, bits
    return most, best_freqs, best_bits


def _context_counts(
    flat: CodeArray, raw_bits: int, mode: int, classes: np.ndarray, threads: int | None
) -> npt.NDArray[np.int64]:
    """Counts of each (context, high part), chunks counted on parallel threads."""
    columns = (1 << (8 * flat.itemsize)) >> raw_bits

    def one(start: int) -> npt.NDArray[np.int64]:
        counts = np.zeros((CONTEXTS, columns), dtype=np.int64)
        part = flat[start : start + CHUNK_SYMBOLS]
        kernels().count_contexts(part, raw_bits, mode, classes, CHUNK_SYMBOLS, counts)
        return counts

    return np.sum(run_all(one, range(0, flat.size, CHUNK_SYMBOLS), threads), axis=0)


def _promising(
    flat: CodeArray, raw_bits: int, mode: int, classes: np.ndarray
) -> bool:
    """Whether contexts save at least ``MIN_GAIN`` of the order-0 entropy on a sample (the
    first ``SAMPLE`` codes, or all), before any table: most tensors stop here, cheaply."""
    sample = flat[:SAMPLE]
    columns = (1 << (8 * flat.itemsize)) >> raw_bits
    by_context = np.zeros((CONTEXTS, columns), dtype=np.int64)
    kernels().count_contexts(sample, raw_bits, mode, classes, CHUNK_SYMBOLS, by_context)
    pooled = _bits(by_context.sum(axis=0))
    conditional = sum(_bits(row) for row in by_context)
    return conditional + raw_bits * sample.size <= (1 - MIN_GAIN) * (
        pooled + raw_bits * sample.size
    )


def _bits(counts: npt.NDArray[np.int64]) -> float:
    """Bits of ``counts`` symbols at their empirical order-0 entropy."""
    c = counts[counts > 0].astype(np.float64)
    total = c.sum()
    return float(total * np.log2(total) - (c * np.log2(c)).sum()) if total else 0.0


def _rows(
    symbols: npt.NDArray[np.intp], freqs: npt.NDArray[np.int64], precision: int, bits: int
) -> npt.NDArray[np.uint64]:
    present = freqs > 0
    if not present.any():
        return np.zeros((1 << bits, 4), dtype=np.uint64)
    return rans._encoder_rows(symbols[present], freqs[present], precision, bits)


_TABLE_HEAD = struct.Struct("<HH")


def _encode_table(symbols: npt.NDArray[np.intp], mode_index: int, freqs: np.ndarray) -> bytes:
    deltas = symbols.astype("<u2")
    deltas[1:] -= deltas[:-1].copy()
    planes = [
        _TABLE_HEAD.pack(freqs.shape[0], mode_index),
        deltas.view(np.uint8).reshape(-1, 2).T.tobytes(),
        np.ascontiguousarray(freqs, dtype="<u4").ravel().view(np.uint8).reshape(-1, 4).T.tobytes(),
    ]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(planes))


def _decode_table(
    table: memoryview, n_symbols: int, width: int, precision: int
) -> tuple[int, npt.NDArray[np.int64], int, npt.NDArray[np.int64]]:
    """K, the symbols, the mode's index and the K rows of frequencies, checked."""
    if not 2 <= n_symbols <= 1 << width or not 1 <= precision <= MAX_PRECISION:
        raise InvalidPackageError(f"entropy stream v3 has {n_symbols=}, {precision=}")
    most = _TABLE_HEAD.size + (2 + 4 * 9) * n_symbols
    raw = inflate_table(table, most, _TABLE_HEAD.size, "context")
    k, mode_index = _TABLE_HEAD.unpack_from(raw)
    if not 1 <= k <= 9 or mode_index >= n_symbols:  # distances are capped at 255
        raise InvalidPackageError(f"entropy stream context table has {k=}, {mode_index=}")
    symbols, freqs = table_rows(raw, _TABLE_HEAD.size, n_symbols, k, width, precision, "context")
    return k, symbols, mode_index, freqs


def inflate_table(table: memoryview, most: int, head: int, name: str) -> bytes:
    """A stream's zstd table frame, inflated: at most ``most`` bytes, at least ``head``."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(table, max_output_size=most)
    except zstandard.ZstdError as exc:
        raise InvalidPackageError(f"entropy stream {name} table is corrupt: {exc}") from None
    if len(raw) < head:
        raise InvalidPackageError(f"entropy stream {name} table is truncated")
    return raw


def table_rows(
    raw: bytes, offset: int, n_symbols: int, rows: int, width: int, precision: int, name: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The symbols (uint16 deltas) and ``rows`` rows of uint32 frequencies (byte planes) after
    ``offset`` in a table, checked: the length, increasing symbols under ``2**width``, each
    row summing to ``2**precision`` or all zero (a context never met)."""
    if len(raw) != offset + (2 + 4 * rows) * n_symbols:
        raise InvalidPackageError(f"entropy stream {name} table has the wrong length")
    planes = np.frombuffer(raw, dtype=np.uint8, offset=offset)
    deltas = np.ascontiguousarray(planes[: 2 * n_symbols].reshape(2, -1).T).view("<u2")
    symbols = np.cumsum(deltas.ravel().astype(np.int64))
    values = np.ascontiguousarray(planes[2 * n_symbols :].reshape(4, -1).T).view("<u4")
    freqs = values.ravel().astype(np.int64).reshape(rows, n_symbols)
    sums = freqs.sum(axis=1)
    if (np.diff(symbols) <= 0).any() or symbols[-1] >= 1 << width or not (
        (sums == 0) | (sums == 1 << precision)
    ).all():
        raise InvalidPackageError(f"entropy stream {name} table is not a valid model")
    return symbols, freqs


def word_counts(body: memoryview, start: int, n_chunks: int, other: int) -> list[int]:
    """The chunks' word counts (uint32 each, from ``start``), checked: every chunk holds its
    lanes' final states, and they with ``other`` bytes besides fill the body exactly (the
    caller's ``chunk_sizes`` has checked that the table fits). A list: NumPy's calls were a
    tenth of a small tensor's set-up."""
    lengths = list(struct.unpack_from(f"<{n_chunks}I", body, start))
    expected = start + 4 * n_chunks + 4 * sum(lengths) + other
    if expected != len(body) or (lengths and min(lengths) < 2 * LANES):
        raise InvalidPackageError(
            f"entropy stream body is {len(body)} bytes, its chunk table says {expected}"
        )
    return lengths


def plan(fields: tuple[Any, ...], body: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype of a checked v3 stream's codes and its chunks (as ``rans.plan``)."""
    _, _, width, raw_bits, precision, count, n_symbols, chunk, table_len, n_chunks, _ = fields
    dtype = np.dtype(np.uint8 if width == 8 else np.uint16)
    k, symbols, mode_index, freqs = _decode_table(
        body[:table_len], n_symbols, width - raw_bits, precision
    )
    sizes = chunk_sizes(count, chunk, n_chunks, True, len(body) - table_len)
    low_bytes = sum(rans.packed_size(n, raw_bits) for n in sizes)
    lengths = word_counts(body, table_len, n_chunks, low_bytes)
    offset = table_len + 4 * n_chunks
    tables = _decoder_tables(symbols, mode_index, freqs, precision, raw_bits, dtype)
    classes = class_table(k)
    chunks = []
    for index, (words_n, n) in enumerate(zip(lengths, sizes, strict=True)):
        words = body[offset : offset + 4 * words_n]
        offset += 4 * words_n
        low = body[offset : offset + rans.packed_size(n, raw_bits)]
        offset += len(low)

        def fill(part: CodeArray, index: int = index, words: memoryview = words,
                 low: memoryview = low) -> None:  # fmt: skip
            array = rans_chunks._words(words)
            ok = kernels().decode_chunk(array, precision, classes, *tables, part)
            if not ok:
                raise InvalidPackageError(
                    f"entropy stream chunk {index} is corrupt: its words do not decode to "
                    f"{part.size} symbols"
                )
            if raw_bits:
                packed = np.frombuffer(low, dtype=np.uint8)
                packed.flags.writeable = False
                rans.kernels().or_low(part, packed, raw_bits)

        chunks.append(rans.Chunk(index * chunk, n, fill))
    return dtype, chunks


@functools.cache
def class_table(k: int) -> npt.NDArray[np.int64]:
    """``class(s)`` for every distance sum ``s`` up to the first of the last class (one array
    for each ``k``, shared: the kernels only read it; built each time, it was 40 µs of each
    small tensor's decoding)."""
    sums = np.arange(1 << max(k - 1, 0), dtype=np.int64)
    bit_length = np.where(sums > 0, np.floor(np.log2(np.maximum(sums, 1))) + 1, 0)
    return np.minimum(bit_length, k - 1).astype(np.int64)


def _decoder_tables(
    symbols: npt.NDArray[np.int64],
    mode_index: int,
    freqs: npt.NDArray[np.int64],
    precision: int,
    raw_bits: int,
    dtype: np.dtype,
) -> tuple[np.ndarray, ...]:
    """Per context and slot the index of its symbol; per context and symbol the frequency
    and cumulative frequency; per symbol the shifted value and the distance from the mode.

    A slot's own entries (frequency, offset, value, distance: 7 bytes a slot, 1.5 MB for
    eight contexts at precision 15) missed the core's caches on every code; a slot now holds
    only its symbol's index (a byte where there are at most 256 symbols), and the rest are
    per symbol, a few kilobytes."""
    k, total = freqs.shape[0], 1 << precision
    symbol_of = np.zeros((k, total), dtype=np.uint8 if symbols.size <= 256 else np.uint16)
    freq = np.ascontiguousarray(freqs, dtype=np.uint32)  # f = 2**16: a lone symbol at 16
    start = np.zeros_like(freq)
    for c in range(k):
        if not freqs[c].any():
            continue
        symbol_of[c] = np.repeat(np.arange(symbols.size), freqs[c])
        start[c, 1:] = np.cumsum(freqs[c])[:-1]
    value = (symbols << raw_bits).astype(dtype)
    dist = np.minimum(np.abs(symbols - symbols[mode_index]), 255).astype(np.uint8)
    return symbol_of, freq, start, value, dist


def compile_kernels() -> None:
    """Compile (or load) the v3 kernels for 8- and 16-bit codes: the decoder's tables take
    the stream's width (codes of 16-bit arrays under 256 are a stream of 8) and, past 256
    high parts, 16-bit symbol indices."""
    from quantcore.coding.symbols import open_stream

    few = [0, 0, 0, 1, 2, 9, 0, 1] * 4
    for codes in (
        np.array(few, dtype=np.uint8),
        np.array(few, dtype=np.uint16) * 100,
        np.concatenate([np.zeros(3000, np.uint16), np.arange(512, dtype=np.uint16)]),
    ):
        stream = encode(codes, rans.count_codes(codes), 1, force=True)
        assert stream is not None
        fields, body = open_stream(stream, (VERSION,))
        dtype, chunks = plan(fields, body)
        for c in chunks:
            c.fill(np.empty(c.size, dtype=dtype))
