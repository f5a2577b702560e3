"""Stream ``QENT`` version 2: static order-0 tables and an interleaved rANS coder compiled
with numba (``quantcore.coding.rans_kernels``), chunks coded on parallel threads.

The table stores each high part's frequency out of ``2**precision`` (uint32), quantised by the
encoder from the counts: the decoder reads the very table the encoder used, so no floating
point is shared between them. ``precision`` is the smallest number of bits (up to
``MAX_PRECISION``) whose cost is within ``PRECISION_TOLERANCE`` of the best precision's;
small precisions keep the decoder's tables in the first-level cache. Chunks of
``CHUNK_SYMBOLS`` are independent: each is coded by ``LANES`` interleaved states and flushes
them at its end (``8 * LANES`` bytes).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcore.coding.parallel import run_all, threads_for
from quantcore.coding.rans_chunks import LANES, Chunk, Coded, _words, first_states
from quantcore.coding.symbols import (
    MAGIC,
    CodeArray,
    chunk_sizes,
    decode_table,
    encode_table,
    open_stream,
    raw_low_bits,
    seal,
)
from quantcore.errors import InvalidPackageError, InvalidSpecError

VERSION = 2
CHUNK_SYMBOLS = 1 << 21
MAX_PRECISION = 24
FAST_PRECISION = 16  # up to which the decoder looks a slot's symbol up directly
PRECISION_TOLERANCE = 3e-5
WIDE_GAIN = 1e-4


def packed_size(count: int, raw_bits: int) -> int:
    """Bytes of ``count`` codes' low ``raw_bits`` bits, packed."""
    return (count * raw_bits + 7) // 8


def kernels() -> ModuleType:
    """The compiled kernels, imported (and numba with them) on first use; Python keeps
    the module once imported."""
    from quantcore.coding import rans_kernels

    return rans_kernels


def compile_kernels() -> None:
    """Compile (or load from the disk cache) every kernel for 8- and 16-bit codes, by coding
    a few codes of each kind: for a process or an image build that would rather pay the first
    run's compilation up front."""
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        peaked: CodeArray = np.array([0, 0, 0, 1, 2, top], dtype=dtype)
        smooth: CodeArray = np.concatenate([peaked, np.arange(0, top, 97, dtype=dtype)])
        uniform: CodeArray = np.arange(top + 1, dtype=dtype)
        for codes in (peaked, smooth, uniform):  # ANS; ANS and raw low bits; raw bits only
            fields, body = open_stream(encode(codes, count_codes(codes), 1), (VERSION,))
            decode(fields, body, 1)
    pack_nibbles(np.arange(3, dtype=np.uint8), 1, np.empty(2, dtype=np.uint8))
    from quantcore.coding import rans_batch

    rans_batch.compile_vector_kernels()


def pack_nibbles(codes: CodeArray, add: int, out: npt.NDArray[np.uint8]) -> None:
    """``out`` = ``codes + add`` as 4-bit values two per byte, low nibble first (ONNX's INT4
    and UINT4 ``raw_data``): ``ceil(codes.size / 2)`` bytes."""
    kernels().pack_nibbles(codes, add & 0xF, out)


def count_codes(flat: CodeArray) -> npt.NDArray[np.int64]:
    """The bincount of ``flat`` over the whole alphabet (65536 bins): the quantizers' compiled
    count, its mask the width's (a no-op on 8- and 16-bit codes)."""
    from quantcore.quantizers.kernels import add_counts  # compiled: numba loads on first use

    counts = np.zeros(1 << 16, dtype=np.int64)
    width = 1 << (8 * flat.itemsize)
    add_counts(flat, counts[:width], width - 1)
    return counts


def encode(flat: CodeArray, counts: npt.NDArray[np.int64], threads: int | None) -> bytes:
    """The v2 stream of ``flat`` codes whose bincount is ``counts``."""
    width = 8 if not counts[256:].any() else 16
    raw_bits = raw_low_bits(counts)
    high_counts = counts.reshape(-1, 1 << raw_bits).sum(axis=1)
    symbols = np.flatnonzero(high_counts)
    coded = symbols.size > 1
    precision, freqs = 0, np.ones(symbols.size, dtype=np.int64)
    if coded:
        precision, freqs = choose_precision(high_counts[symbols], raw_bits * flat.size)
    table = encode_table(symbols, freqs, 4)
    pieces: list[tuple[memoryview, memoryview]] = []
    if coded or (raw_bits and flat.size):
        bits = max(8 * flat.itemsize, width) - raw_bits  # a row for any code and any count
        rows = _encoder_rows(symbols, freqs, precision, bits) if coded else None
        starts = range(0, flat.size, CHUNK_SYMBOLS)

        def one(start: int) -> tuple[memoryview, memoryview]:
            part = flat[start : start + CHUNK_SYMBOLS]
            return _encode_chunk(part, raw_bits, rows, int(symbols[0]))

        pieces = run_all(one, starts, threads)
    lengths = np.array([len(words) // 4 for words, _ in pieces], dtype="<u4")
    fields = (MAGIC, VERSION, width, raw_bits, precision, flat.size, symbols.size, CHUNK_SYMBOLS)
    body: list[bytes | memoryview] = [table, lengths.tobytes()]
    body += [piece for pair in pieces for piece in pair]
    return seal((*fields, len(table), len(pieces)), body)


def _encode_chunk(
    part: CodeArray, raw_bits: int, rows: npt.NDArray[np.uint64] | None, first: int
) -> tuple[memoryview, memoryview]:
    """A chunk's words and low bits (byte views, not copies); no words when ``rows`` is
    None: every code's high part is then ``first``."""
    packed = np.zeros(packed_size(part.size, raw_bits), dtype=np.uint8)
    if rows is None:
        if (part >> raw_bits != first).any():
            raise InvalidSpecError("the counts given are not the codes' bincount")
        kernels().pack_low(part, raw_bits, packed)
        return memoryview(b""), packed.data
    words = np.empty(part.size + 2 * LANES, dtype=np.uint32)
    start = kernels().encode_chunk(part, raw_bits, rows, words, packed)
    if start < 0:
        raise InvalidSpecError("the counts given are not the codes' bincount")
    # A copy of the words used, so that the buffer sized for the worst case is freed now.
    return memoryview(words[start:].astype("<u4", copy=False).tobytes()), packed.data


def choose_precision(
    counts: npt.NDArray[np.int64], extra_bits: int
) -> tuple[int, npt.NDArray[np.int64]]:
    """The smallest precision whose coded size is within ``PRECISION_TOLERANCE`` of the best
    one's (relative to the whole stream, ``extra_bits`` of raw low bits included), and its
    frequencies; past ``FAST_PRECISION`` (a decoder about half as fast) only if that saves
    more than ``WIDE_GAIN``. At least two symbols."""
    lowest = max(1, math.ceil(math.log2(counts.size)))
    best = _freqs(counts, MAX_PRECISION)
    best_bits = _cost(counts, best, MAX_PRECISION)
    total_bits = best_bits + extra_bits
    candidates = {n: _freqs(counts, n) for n in range(lowest, MAX_PRECISION)}
    candidates[MAX_PRECISION] = best
    cost = {n: _cost(counts, freqs, n) for n, freqs in candidates.items()}
    fast = [n for n in cost if n <= FAST_PRECISION]
    for n in sorted(cost):
        wide_pays = not fast or cost[max(fast)] > best_bits + WIDE_GAIN * total_bits
        if cost[n] <= best_bits + PRECISION_TOLERANCE * total_bits and (n in fast or wide_pays):
            return n, candidates[n]
    return max(fast), candidates[max(fast)]  # not reached: the best precision qualifies


def _cost(counts: npt.NDArray[np.int64], freqs: npt.NDArray[np.int64], precision: int) -> float:
    """Bits that ``counts`` symbols take at frequencies ``freqs`` out of ``2**precision``."""
    return float((counts * (precision - np.log2(freqs))).sum())


def _freqs(counts: npt.NDArray[np.int64], precision: int) -> npt.NDArray[np.int64]:
    """Positive frequencies summing to ``2**precision``, close to proportional to ``counts``:
    rounded down (at least 1), then the units left over (or missing) given to (taken from)
    the symbols where a unit changes the coded size most (least)."""
    total = 1 << precision
    weights = counts.astype(np.float64)
    freqs = np.maximum(1, np.floor(weights * (total / weights.sum()))).astype(np.int64)
    while (left := total - int(freqs.sum())) != 0:
        if left > 0:
            gain = weights * np.log2((freqs + 1) / freqs)
            chosen = np.argsort(-gain, kind="stable")[: min(left, freqs.size)]
            freqs[chosen] += 1
        else:
            reducible = freqs > 1
            loss = np.where(reducible, weights * np.log2(freqs / np.maximum(freqs - 1, 1)), np.inf)
            chosen = np.argsort(loss, kind="stable")[: min(-left, int(reducible.sum()))]
            freqs[chosen] -= 1
    return freqs


def _encoder_rows(
    symbols: npt.NDArray[np.intp], freqs: npt.NDArray[np.int64], precision: int, bits: int
) -> npt.NDArray[np.uint64]:
    """The encoder's table (``rans_kernels.encode_chunk``): a row for each of the ``2**bits``
    possible high parts, zero for those absent."""
    rows = np.zeros((1 << bits, 4), dtype=np.uint64)
    total = 1 << precision
    cums = np.concatenate([[0], np.cumsum(freqs)[:-1]])
    for symbol, freq, cum in zip(symbols.tolist(), freqs.tolist(), cums.tolist(), strict=True):
        if freq == 1:  # x // 1 = mulhi(x, 2**64 - 1) + 1: folded into the bias
            rcp, shift, bias = (1 << 64) - 1, 0, cum + total - 1
        else:
            shift = (freq - 1).bit_length()  # ceil(log2(freq))
            rcp, shift, bias = -(-(1 << (shift + 63)) // freq), shift - 1, cum
        rows[symbol] = (freq << (63 - precision), rcp, bias, (total - freq) | shift << 32)
    return rows


def decode(fields: tuple[Any, ...], body: memoryview, threads: int | None) -> CodeArray:
    """The codes of a v2 stream whose header and CRC ``symbols.open_stream`` has checked."""
    dtype, chunks = plan(fields, body)
    out = np.empty(fields[5], dtype=dtype)
    fill_all(chunks, out, threads)
    return out


def fill_all(chunks: list[Chunk], out: CodeArray, threads: int | None) -> None:
    """Every chunk into its place in ``out``, in as many runs of consecutive chunks as
    threads (each run through ``rans_batch.fill_chunks``, which decodes several at once)."""
    from quantcore.coding import rans_batch

    count = min(threads_for(threads), len(chunks))
    runs = [chunks[i * len(chunks) // count : (i + 1) * len(chunks) // count]
            for i in range(count)]  # fmt: skip

    def one(run: list[Chunk]) -> None:
        rans_batch.fill_chunks([(c, out[c.start : c.start + c.size]) for c in run])

    run_all(one, runs, count)


def plan(fields: tuple[Any, ...], body: memoryview) -> tuple[np.dtype, list[Chunk]]:
    """The dtype of a checked v2 stream's codes and its chunks, once the table and the chunk
    lengths are checked (nothing is decoded or allocated for the codes yet)."""
    _, _, width, raw_bits, precision, count, n_symbols, chunk, table_len, n_chunks, _ = fields
    dtype = np.dtype(np.uint8 if width == 8 else np.uint16)
    symbols, freqs = decode_table(body[:table_len], n_symbols, width - raw_bits, 4)
    coded = n_symbols > 1
    if n_symbols and (int(freqs.sum()) != 1 << precision or precision > MAX_PRECISION
                      or coded != (precision > 0)):  # fmt: skip
        raise InvalidPackageError(
            f"entropy stream frequencies sum to {int(freqs.sum())}, not 2**{precision}"
        )
    chunked = coded or (raw_bits > 0 and count > 0)
    sizes = chunk_sizes(count, chunk, n_chunks, chunked, len(body) - table_len)
    offset = table_len + 4 * n_chunks
    lengths = np.frombuffer(body[table_len:offset], dtype="<u4").astype(np.int64)
    expected = offset + 4 * int(lengths.sum()) + sum(packed_size(n, raw_bits) for n in sizes)
    if expected != len(body):
        raise InvalidPackageError(
            f"entropy stream body is {len(body)} bytes, its chunk table says {expected}"
        )
    if (lengths < (2 * LANES if coded else 0)).any() or (not coded and lengths.any()):
        raise InvalidPackageError("entropy stream chunk table is corrupt")
    if not chunked:
        constant = dtype.type(symbols[0] if n_symbols == 1 else 0)
        return dtype, [Chunk(0, count, lambda part: part.fill(constant))] if count else []
    high = (symbols << raw_bits).astype(dtype)
    tables = _decoder_tables(high, freqs, precision) if coded else None
    wide = None  # the vector decoder's table, where it may decode this stream
    if tables is not None and precision <= FAST_PRECISION and _vector():
        wide = tables[0].astype(np.uint64) | tables[1].astype(np.uint64) << np.uint64(32)
    chunks = []
    for index, (words_n, n) in enumerate(zip(lengths.tolist(), sizes, strict=True)):
        words = body[offset : offset + 4 * words_n]
        offset += 4 * words_n
        low = body[offset : offset + packed_size(n, raw_bits)]
        offset += len(low)

        def fill(part: CodeArray, index: int = index, words: memoryview = words,
                 low: memoryview = low) -> None:  # fmt: skip
            packed = np.frombuffer(low, dtype=np.uint8)
            packed.flags.writeable = False  # as from bytes: one kernel signature
            if tables is None:
                part[:] = high[0]
                kernels().or_low(part, packed, raw_bits)
            else:
                _decode_chunk(_words(words), tables, precision, part, packed, raw_bits, index)

        batch = None if wide is None else Coded(words, low, wide, precision, raw_bits, index)
        chunks.append(Chunk(index * chunk, n, fill, batch))
    return dtype, chunks


def _vector() -> bool:
    from quantcore.coding import rans_batch

    return rans_batch.vector_kernels() is not None


def _decoder_tables(
    high: CodeArray, freqs: npt.NDArray[np.int64], precision: int
) -> tuple[Any, ...]:
    """Up to ``FAST_PRECISION``: for each slot, its symbol's ``f | (slot - c) << 16`` and
    value. Beyond: the shift that leaves a slot's top 16 bits (or all), for each of those
    the first symbol there; the cumulative frequencies and each symbol's value."""
    cum = np.concatenate([[0], np.cumsum(freqs)]).astype(np.uint32)
    if precision <= FAST_PRECISION:
        symbol_of = np.repeat(np.arange(freqs.size), freqs)
        slots = np.arange(1 << precision, dtype=np.int64)
        entry = (freqs[symbol_of] | (slots - cum[symbol_of]) << 16).astype(np.uint32)
        return entry, high[symbol_of]
    coarse = max(precision - 16, 0)
    starts = np.arange(1 << (precision - coarse), dtype=np.int64) << coarse
    bucket = np.searchsorted(cum[1:], starts, side="right").astype(np.uint32)
    return np.uint64(coarse), bucket, cum, high


def _decode_chunk(
    words: npt.NDArray[np.uint32],
    tables: tuple[Any, ...],
    precision: int,
    out: CodeArray,
    packed: npt.NDArray[np.uint8],
    raw_bits: int,
    index: int,
) -> None:
    first_states(words, index)
    if precision <= FAST_PRECISION:
        ok = kernels().decode_chunk(words, precision, *tables, out, packed, raw_bits)
    else:
        ok = kernels().decode_chunk_wide(words, precision, *tables, out, packed, raw_bits)
    if not ok:
        raise InvalidPackageError(
            f"entropy stream chunk {index} is corrupt: its words do not decode to {out.size} "
            "symbols"
        )
