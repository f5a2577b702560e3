"""Stream ``QENT`` version 1: one ANS coder of the ``constriction`` package per chunk.

Packages written before version 2 hold these streams, so they are still decoded (and still
written on request, for tests and benchmarks). The coder holds the GIL: one stream at a time
per process. Layout: see ``quantcore.coding.entropy``; the table stores each high part's count
(uint64), from which encoder and decoder build the same model with the same float64 division
``counts / count``.
"""

from __future__ import annotations

import constriction
import numpy as np
import numpy.typing as npt

from quantcore.coding.packing import pack_bits, packed_size, unpack_bits
from quantcore.coding.symbols import (
    ALPHABET,
    MAGIC,
    CodeArray,
    chunk_sizes,
    decode_table,
    encode_table,
    raw_low_bits,
    seal,
)
from quantcore.errors import InvalidPackageError

VERSION = 1
CHUNK_SYMBOLS = 1 << 22
# Absent high parts inside the present range up to which ranks are computed, not looked up.
MAX_GAPS = 8


def encode(flat: CodeArray, counts: npt.NDArray[np.int64]) -> bytes:
    """The v1 stream of ``flat`` codes whose bincount is ``counts``."""
    width = 8 if not counts[256:].any() else 16
    raw_bits = raw_low_bits(counts)
    high_counts = counts.reshape(-1, 1 << raw_bits).sum(axis=1)
    symbols = np.flatnonzero(high_counts)
    present = high_counts[symbols]
    table = encode_table(symbols, present, 8)
    chunks: list[bytes] = []
    lengths: list[int] = []
    if symbols.size > 1 or (raw_bits and flat.size):
        model = _model(present) if symbols.size > 1 else None
        rank = _Ranks(symbols, raw_bits)
        for start in range(0, flat.size, CHUNK_SYMBOLS):
            part = flat[start : start + CHUNK_SYMBOLS]
            words = b""
            if model is not None:
                coder = constriction.stream.stack.AnsCoder()
                coder.encode_reverse(rank(part), model)
                words = coder.get_compressed().astype("<u4", copy=False).tobytes()
            lengths.append(len(words) // 4)
            chunks.append(words)
            if raw_bits:
                chunks.append(pack_bits(part & ((1 << raw_bits) - 1), raw_bits))
    fields = (MAGIC, VERSION, width, raw_bits, 0, flat.size, symbols.size, CHUNK_SYMBOLS)
    body = [table, np.array(lengths, dtype="<u4").tobytes(), *chunks]
    return seal((*fields, len(table), len(lengths)), body)


class _Ranks:
    """Maps codes to the model's dense index of their high part (its rank among the present
    high parts), as the ``int32`` the coder takes.

    The rank of ``h`` is ``h - first`` less the number of absent values (gaps) between the
    first present high part and ``h``. With at most ``MAX_GAPS`` gaps (the usual case:
    quantizers use adjacent levels, bar a few empty ones among the outliers) that is a
    subtraction and one comparison per gap in the codes' own narrow dtype, several times
    faster than a table lookup (which widens every index to ``intp``); otherwise a table.
    """

    def __init__(self, symbols: npt.NDArray[np.intp], raw_bits: int) -> None:
        self.raw_bits = raw_bits
        self.first = int(symbols[0])
        present = np.zeros(int(symbols[-1]) - self.first + 1, dtype=bool)
        present[symbols - self.first] = True
        self.gaps = [int(g) + self.first for g in np.flatnonzero(~present)[: MAX_GAPS + 1]]
        self.table: npt.NDArray[np.int32] | None = None
        if len(self.gaps) > MAX_GAPS:
            self.table = np.zeros(ALPHABET >> raw_bits, dtype=np.int32)
            self.table[symbols] = np.arange(symbols.size, dtype=np.int32)

    def __call__(self, part: CodeArray) -> npt.NDArray[np.int32]:
        high = part >> self.raw_bits if self.raw_bits else part
        if self.table is not None:
            return self.table[high]
        ranks = high - self.first  # no wrap-around: every high part is at least the first
        for gap in self.gaps:
            ranks -= high > gap
        return ranks.astype(np.int32)


def decode(fields: tuple, body: memoryview) -> CodeArray:
    """The codes of a v1 stream whose header and CRC ``symbols.open_stream`` has checked."""
    _, _, width, raw_bits, _, count, n_symbols, chunk, table_len, n_chunks, _ = fields
    symbols, counts = decode_table(body[:table_len], n_symbols, width - raw_bits, 8)
    if int(counts.sum()) != count:
        raise InvalidPackageError(
            f"entropy stream symbol counts sum to {int(counts.sum())}, header says {count=}"
        )
    chunked = n_symbols > 1 or (raw_bits > 0 and count > 0)
    sizes = chunk_sizes(count, chunk, n_chunks, chunked, len(body) - table_len)
    offset = table_len + 4 * n_chunks
    lengths = np.frombuffer(body[table_len:offset], dtype="<u4").astype(np.int64)
    expected = offset + 4 * int(lengths.sum()) + sum((n * raw_bits + 7) // 8 for n in sizes)
    if expected != len(body) or (n_symbols <= 1 and lengths.any()):
        raise InvalidPackageError(
            f"entropy stream body is {len(body)} bytes, its chunk table says {expected}"
        )
    out = np.empty(count, dtype=np.uint8 if width == 8 else np.uint16)
    if not chunked:
        out[:] = symbols[0] if n_symbols == 1 else 0
        return out
    model = _model(counts) if n_symbols > 1 else None
    high = symbols.astype(out.dtype) << raw_bits  # the gather below writes the output type
    for index, (words_n, n) in enumerate(zip(lengths, sizes, strict=True)):
        start = index * chunk
        if model is None:
            out[start : start + n] = high[0]
        else:
            words = np.frombuffer(body[offset : offset + 4 * words_n], "<u4").astype(np.uint32)
            out[start : start + n] = high[_decode_chunk(words, model, n, index)]
        offset += 4 * words_n
        if raw_bits:
            size = packed_size(n, raw_bits)
            out[start : start + n] |= unpack_bits(body[offset : offset + size], raw_bits, n)
            offset += size
    return out


def _decode_chunk(
    words: npt.NDArray[np.uint32], model: object, n: int, index: int
) -> npt.NDArray[np.int32]:
    """Dense indices of the ``n`` high parts of chunk ``index``."""
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        dense: npt.NDArray[np.int32] = coder.decode(model, n)
    except ValueError as exc:
        raise InvalidPackageError(f"entropy stream chunk {index} is corrupt: {exc}") from exc
    if not coder.is_empty():
        raise InvalidPackageError(
            f"entropy stream chunk {index} is corrupt: words left after {n} symbols"
        )
    return dense


def _model(counts: npt.NDArray[np.int64]) -> constriction.stream.model.Categorical:
    """The coder's model; encoder and decoder both call this on the same integer counts."""
    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)
