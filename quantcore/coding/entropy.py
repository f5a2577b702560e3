"""Entropy coding of integer codes with an order-0 model and ANS (``constriction``).

``encode_codes`` counts the symbols, splits each code into a high part, coded with an
asymmetric-numeral-systems coder under one categorical model built from the counts, and
``raw_bits`` low bits stored bit-packed as they are (``quantcore.coding.packing``). ``raw_bits`` is
the largest k whose estimated size, ``N * (H(code >> k) + k)`` plus the table, is within
``RAW_BITS_TOLERANCE`` of the best k: where the distribution is smooth at the scale of 2**k
levels (a 16-bit Laplacian), the low bits are almost uniform and coding them would buy
nothing, while a smaller alphabet makes decoding several times faster and the table tiny.
Where it is not (3 or 4 bits), k is 0.

The symbols are coded in independent chunks of ``CHUNK_SYMBOLS`` so that the temporary
``int32`` copy the coder needs stays small. The output is a self-describing byte stream (all
integers little-endian)::

    header (36 bytes, struct "<4sBBBBQIIIII"):
        magic b"QENT", version (1), width of the decoded codes in bits (8 or 16), raw_bits,
        reserved (0), count of symbols, number of distinct high parts, chunk size, length of
        the table, number of chunks, CRC-32 of the header before it and of the body
    table:  zstd frame of the distinct high parts as uint16 deltas (the first one absolute)
            and their counts as uint64, both stored as byte planes (all low bytes first)
    chunks: the number of 32-bit ANS words of each chunk (uint32 each), then for each chunk
            its words followed by its ``ceil(n * raw_bits / 8)`` bytes of packed low bits

The decoder rebuilds the model from the integer counts with the same float64 division
``counts / count`` as the encoder, so both quantise the identical probabilities and agree bit
for bit. The model covers only the high parts present, indexed densely.

Degenerate cases: an empty input stores no chunks. A single distinct high part has zero
entropy: its chunks hold no words (and no chunks at all when ``raw_bits`` is 0, e.g. a
constant input). Uniform codes end up fully raw (plain bit packing). Up to 65536 distinct
symbols are supported; the coder's fixed-point precision gives every present symbol a
non-zero probability. Rate: the size stays within ``RAW_BITS_TOLERANCE`` (0.1%) plus a few
1e-5 of the best of ``N * (H(code >> k) + k)`` and the table, plus 4 bytes a chunk;
see ``bench.bench_entropy``.
"""

from __future__ import annotations

import struct
import zlib

import constriction
import numpy as np
import numpy.typing as npt
import zstandard

from quantcore.coding.packing import pack_bits, packed_size, unpack_bits
from quantcore.errors import InvalidPackageError, InvalidSpecError

MAGIC = b"QENT"
VERSION = 1
CHUNK_SYMBOLS = 1 << 22
RAW_BITS_TOLERANCE = 1e-3
# Bytes the zstd'd table spends per distinct symbol (measured: about 1.0 for 30K symbols).
_TABLE_BYTES_PER_SYMBOL = 1.0
_HEADER = struct.Struct("<4sBBBBQIIIII")
_CRC_AT = _HEADER.size - 4  # the CRC-32 is the header's last field
_ALPHABET = 1 << 16
# Absent high parts inside the present range up to which ranks are computed, not looked up.
_MAX_GAPS = 8
# Symbols counted per bincount call: bincount widens its input to int64 (8 bytes a symbol).
_COUNT_SLICE = 1 << 20

CodeArray = npt.NDArray[np.unsignedinteger]


def empirical_entropy_bits(codes: npt.ArrayLike) -> float:
    """Order-0 entropy of ``codes`` in bits per symbol: ``H = -sum(p_s log2 p_s)``.

    ``p_s = n_s / N`` from the symbol counts ``n_s`` over all ``N`` symbols. Zero for an empty
    input or a single distinct symbol. Codes must be integers in ``[0, 65535]``.
    """
    counts = _symbol_counts(_flat_codes(codes))
    return _entropy_from_counts(counts[counts > 0])


def encode_codes(codes: npt.ArrayLike, *, counts: npt.ArrayLike | None = None) -> bytes:
    """Entropy-code non-negative integer ``codes`` (< 2**16, any shape, read in C order).

    Returns the versioned stream described in the module docstring; ``decode_codes`` is its
    exact inverse (flat, ``uint8`` if every code is below 256, else ``uint16``). Raises
    ``InvalidSpecError`` for non-integer codes or codes outside ``[0, 65535]``.

    ``counts``, when the caller has it already (a quantizer counts its codes), is the codes'
    bincount: ``counts[c]`` codes equal ``c``, at most 65536 bins. It spares a counting pass,
    so it must be exact; only its shape and its sum (the number of codes) are checked.
    """
    flat = _flat_codes(codes)
    counts = _symbol_counts(flat) if counts is None else _given_counts(counts, flat.size)
    width = 8 if not counts[256:].any() else 16
    raw_bits = _raw_low_bits(counts)
    high_counts = counts.reshape(-1, 1 << raw_bits).sum(axis=1)
    symbols = np.flatnonzero(high_counts)
    present = high_counts[symbols]
    table = _encode_table(symbols, present)
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
    header = _HEADER.pack(*fields, len(table), len(lengths), 0)
    body = [table, np.array(lengths, dtype="<u4").tobytes(), *chunks]
    crc = zlib.crc32(header[:_CRC_AT])
    for piece in body:
        crc = zlib.crc32(piece, crc)
    return b"".join([header[:_CRC_AT], struct.pack("<I", crc), *body])


class _Ranks:
    """Maps codes to the model's dense index of their high part (its rank among the present
    high parts), as the ``int32`` the coder takes.

    The rank of ``h`` is ``h - first`` less the number of absent values (gaps) between the
    first present high part and ``h``. With at most ``_MAX_GAPS`` gaps (the usual case:
    quantizers use adjacent levels, bar a few empty ones among the outliers) that is a
    subtraction and one comparison per gap in the codes' own narrow dtype, several times
    faster than a table lookup (which widens every index to ``intp``); otherwise a table.
    """

    def __init__(self, symbols: npt.NDArray[np.intp], raw_bits: int) -> None:
        self.raw_bits = raw_bits
        self.first = int(symbols[0])
        present = np.zeros(int(symbols[-1]) - self.first + 1, dtype=bool)
        present[symbols - self.first] = True
        self.gaps = [int(g) + self.first for g in np.flatnonzero(~present)[: _MAX_GAPS + 1]]
        self.table: npt.NDArray[np.int32] | None = None
        if len(self.gaps) > _MAX_GAPS:
            self.table = np.zeros(_ALPHABET >> raw_bits, dtype=np.int32)
            self.table[symbols] = np.arange(symbols.size, dtype=np.int32)

    def __call__(self, part: CodeArray) -> npt.NDArray[np.int32]:
        high = part >> self.raw_bits if self.raw_bits else part
        if self.table is not None:
            return self.table[high]
        ranks = high - self.first  # no wrap-around: every high part is at least the first
        for gap in self.gaps:
            ranks -= high > gap
        return ranks.astype(np.int32)


def decode_codes(data: bytes | bytearray | memoryview) -> CodeArray:
    """Decode a stream written by ``encode_codes`` back to the flat array of codes.

    Raises ``InvalidPackageError`` naming what is wrong for a truncated, corrupt or
    unknown-version stream (the CRC-32 covers the whole stream, and every chunk must consume
    exactly its words).
    """
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise InvalidPackageError(
            f"entropy stream truncated: {len(view)} bytes, the header alone needs {_HEADER.size}"
        )
    magic, version, width, raw_bits, _, count, n_symbols, chunk, table_len, n_chunks, crc = (
        _HEADER.unpack_from(view)
    )
    if magic != MAGIC:  # checked before the CRC: the likeliest mistake gets the clearest message
        raise InvalidPackageError(f"not an entropy stream: {magic=}, expected {MAGIC!r}")
    if version != VERSION:
        raise InvalidPackageError(f"entropy stream {version=} is not supported (only {VERSION})")
    body = view[_HEADER.size :]
    if zlib.crc32(body, zlib.crc32(view[:_CRC_AT])) != crc:
        raise InvalidPackageError(
            f"entropy stream corrupt or truncated: CRC-32 mismatch over {len(view)} bytes"
        )
    if width not in (8, 16) or raw_bits > width:
        raise InvalidPackageError(f"entropy stream has {width=} and {raw_bits=}")
    symbols, counts = _decode_table(body[:table_len], n_symbols, count, width - raw_bits)
    out = np.empty(count, dtype=np.uint8 if width == 8 else np.uint16)
    chunked = n_symbols > 1 or (raw_bits > 0 and count > 0)
    if chunked and chunk == 0:
        raise InvalidPackageError("entropy stream chunk size is 0")
    expected_chunks = -(-count // chunk) if chunked else 0
    if n_chunks != expected_chunks:
        raise InvalidPackageError(
            f"entropy stream has {n_chunks=}, expected {expected_chunks} for {count=}"
        )
    offset = table_len + 4 * n_chunks
    lengths = np.frombuffer(body[table_len:offset], dtype="<u4").astype(np.int64)
    sizes = [min(chunk, count - i * chunk) for i in range(n_chunks)]
    expected = offset + 4 * int(lengths.sum()) + sum((n * raw_bits + 7) // 8 for n in sizes)
    if expected != len(body) or (n_symbols <= 1 and lengths.any()):
        raise InvalidPackageError(
            f"entropy stream body is {len(body)} bytes, its chunk table says {expected}"
        )
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


def _raw_low_bits(counts: npt.NDArray[np.int64]) -> int:
    """How many low bits to store raw: the largest k whose estimated size is within
    ``RAW_BITS_TOLERANCE`` of the smallest.

    Estimated size of k: ``N * (H(code >> k) + k) / 8`` bytes of symbols plus
    ``_TABLE_BYTES_PER_SYMBOL`` for each distinct high part in the table. The table term
    matters for small inputs over wide alphabets, where many symbols are seen a few times.
    Zero for an input of zero entropy (nothing to gain).
    """
    total = int(counts.sum())
    if _entropy_from_counts(counts[counts > 0]) == 0.0:
        return 0
    sizes = []
    # Bins past the last used code's power of two are empty: every group there is too.
    grouped = counts[: 1 << int(np.flatnonzero(counts)[-1]).bit_length()]
    for k in range(17):
        if k and grouped.size > 1:  # counts of code >> k: pairs of the bins of code >> k-1
            grouped = grouped.reshape(-1, 2).sum(axis=1)
        present = grouped[grouped > 0]
        bits = _entropy_from_counts(present) + k
        sizes.append(total * bits / 8 + _TABLE_BYTES_PER_SYMBOL * present.size)
    budget = min(sizes) * (1 + RAW_BITS_TOLERANCE)
    return max(k for k, size in enumerate(sizes) if size <= budget)


def _flat_codes(codes: npt.ArrayLike) -> CodeArray:
    flat = np.asarray(codes).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if flat.dtype.kind not in "iu":
        raise InvalidSpecError(f"codes must be integers, got dtype={flat.dtype.name}")
    if flat.dtype.itemsize > 2 or flat.dtype.kind == "i":
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= _ALPHABET:
            raise InvalidSpecError(
                f"codes span [{lo}, {hi}], outside [0, {_ALPHABET - 1}]; "
                "subtract code_min before entropy coding"
            )
        flat = flat.astype(np.uint8 if hi < 256 else np.uint16)
    return flat


def _symbol_counts(flat: CodeArray) -> npt.NDArray[np.int64]:
    """Counts of every symbol 0..65535, counted in slices to bound bincount's int64 copy."""
    counts = np.zeros(_ALPHABET, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_SLICE):
        counts += np.bincount(flat[start : start + _COUNT_SLICE], minlength=_ALPHABET)
    return counts


def _given_counts(counts: npt.ArrayLike, size: int) -> npt.NDArray[np.int64]:
    """A caller's bincount of ``size`` codes, padded to the whole alphabet."""
    given = np.asarray(counts)
    total = int(given.sum()) if given.size else 0
    shaped = given.ndim == 1 and given.size <= _ALPHABET and given.dtype.kind in "iu"
    if not shaped or total != size or bool((given < 0).any()):
        raise InvalidSpecError(
            f"counts of shape {given.shape} summing to {total} are not a bincount of "
            f"{size} codes below {_ALPHABET}"
        )
    padded = np.zeros(_ALPHABET, dtype=np.int64)
    padded[: given.size] = given
    return padded


def _entropy_from_counts(counts: npt.NDArray[np.int64]) -> float:
    total = int(counts.sum())
    if total == 0:
        return 0.0
    c = counts.astype(np.float64)
    return max(0.0, float(np.log2(total) - (c * np.log2(c)).sum() / total))


def _model(counts: npt.NDArray[np.int64]) -> constriction.stream.model.Categorical:
    """The coder's model; encoder and decoder both call this on the same integer counts."""
    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _encode_table(symbols: npt.NDArray[np.intp], counts: npt.NDArray[np.int64]) -> bytes:
    """Symbol deltas (uint16) and counts (uint64), split into byte planes, then zstd.

    The planes put the mostly-zero high bytes of the counts together, which lets a fast zstd
    level compress the table about as well as its slowest level does on the plain layout.
    """
    deltas = np.diff(symbols, prepend=0).astype("<u2")
    planes = [
        deltas.view(np.uint8).reshape(-1, 2).T.tobytes(),
        counts.astype("<u8").view(np.uint8).reshape(-1, 8).T.tobytes(),
    ]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(planes))


def _decode_table(
    table: memoryview, n_symbols: int, count: int, width: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct symbols of ``width`` bits and their counts, checked against the header."""
    if n_symbols > _ALPHABET:
        raise InvalidPackageError(f"entropy stream {n_symbols=} exceeds {_ALPHABET}")
    size = 10 * n_symbols
    try:
        raw = zstandard.ZstdDecompressor().decompress(table, max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise InvalidPackageError(f"entropy stream symbol table is corrupt: {exc}") from exc
    if len(raw) != size:
        raise InvalidPackageError(
            f"entropy stream symbol table holds {len(raw)} bytes, expected {size}"
        )
    planes = np.frombuffer(raw, dtype=np.uint8)
    deltas = np.ascontiguousarray(planes[: 2 * n_symbols].reshape(2, -1).T).view("<u2")
    symbols = np.cumsum(deltas.ravel().astype(np.int64))
    count_bytes = np.ascontiguousarray(planes[2 * n_symbols :].reshape(8, -1).T)
    counts = count_bytes.view("<u8").ravel().astype(np.int64)
    increasing = n_symbols < 2 or bool(np.all(np.diff(symbols) > 0))
    if n_symbols and (not increasing or symbols[-1] >= 1 << width or counts.min() <= 0):
        raise InvalidPackageError("entropy stream symbol table is not a valid symbol set")
    if int(counts.sum()) != count:
        raise InvalidPackageError(
            f"entropy stream symbol counts sum to {int(counts.sum())}, header says {count=}"
        )
    return symbols, counts
