"""Entropy coding of integer codes with an order-0 model and ANS (``constriction``).

``encode_codes`` counts the symbols, builds one categorical model from the counts and codes
the symbols with an asymmetric-numeral-systems coder, in independent chunks of
``CHUNK_SYMBOLS`` so that the temporary ``int32`` copy the coder needs stays small. The
output is a self-describing byte stream (all integers little-endian)::

    header (36 bytes, struct "<4sBBHQIIIII"):
        magic b"QENT", version (1), width of the decoded codes in bits (8 or 16),
        reserved (0), count of symbols, number of distinct symbols, chunk size,
        length of the table, number of chunks, CRC-32 of the header before it and of
        everything after the header
    table:  zstd frame of the distinct symbols as uint16 deltas (the first one absolute)
            and their counts as uint64, both stored as byte planes (all low bytes first)
    chunks: number of 32-bit words of each chunk (uint32 each), then the chunks' words

The decoder rebuilds the model from the integer counts with the same float64 division
``counts / count`` as the encoder, so both quantise the identical probabilities and agree bit
for bit. The model covers only the symbols present, indexed densely.

Degenerate cases: an empty input or an input of a single distinct symbol has zero entropy and
stores no chunks (header and table only). Up to 65536 distinct symbols are supported; the
coder's fixed-point precision (24 bits) gives every present symbol a non-zero probability.
Rate: the coded size stays within a few 1e-5 relative of ``count * H`` for large inputs plus
about 12 bytes per chunk; see ``bench.bench_entropy``.
"""

from __future__ import annotations

import struct
import zlib

import constriction
import numpy as np
import numpy.typing as npt
import zstandard

from quantcore.errors import InvalidPackageError, InvalidSpecError

MAGIC = b"QENT"
VERSION = 1
CHUNK_SYMBOLS = 1 << 22
_HEADER = struct.Struct("<4sBBHQIIIII")
_CRC_AT = _HEADER.size - 4  # the CRC-32 is the header's last field
_ALPHABET = 1 << 16
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


def encode_codes(codes: npt.ArrayLike) -> bytes:
    """Entropy-code non-negative integer ``codes`` (< 2**16, any shape, read in C order).

    Returns the versioned stream described in the module docstring; ``decode_codes`` is its
    exact inverse (flat, ``uint8`` if every code is below 256, else ``uint16``). Raises
    ``InvalidSpecError`` for non-integer codes or codes outside ``[0, 65535]``.
    """
    flat = _flat_codes(codes)
    counts = _symbol_counts(flat)
    symbols = np.flatnonzero(counts)
    present = counts[symbols]
    width = 8 if symbols.size == 0 or symbols[-1] < 256 else 16
    table = _encode_table(symbols, present)
    chunks: list[bytes] = []
    if symbols.size > 1:
        model = _model(present)
        dense = np.zeros(_ALPHABET, dtype=np.int32)
        dense[symbols] = np.arange(symbols.size, dtype=np.int32)
        for start in range(0, flat.size, CHUNK_SYMBOLS):
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(dense[flat[start : start + CHUNK_SYMBOLS]], model)
            chunks.append(coder.get_compressed().astype("<u4", copy=False).tobytes())
    lengths = np.array([len(c) // 4 for c in chunks], dtype="<u4").tobytes()
    body = [table, lengths, *chunks]
    fields = (MAGIC, VERSION, width, 0, flat.size, symbols.size, CHUNK_SYMBOLS, len(table))
    header = _HEADER.pack(*fields, len(chunks), 0)
    crc = zlib.crc32(header[:_CRC_AT])
    for part in body:
        crc = zlib.crc32(part, crc)
    return b"".join([header[:_CRC_AT], struct.pack("<I", crc), *body])


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
    magic, version, width, _, count, n_symbols, chunk, table_len, n_chunks, crc = (
        _HEADER.unpack_from(view)
    )
    if magic != MAGIC:  # checked before the CRC: the likeliest mistake gets the clearest message
        raise InvalidPackageError(f"not an entropy stream: {magic=}, expected {MAGIC!r}")
    if version != VERSION:
        raise InvalidPackageError(f"entropy stream {version=} is not supported (only {VERSION})")
    if width not in (8, 16):
        raise InvalidPackageError(f"entropy stream code {width=} must be 8 or 16")
    body = view[_HEADER.size :]
    if zlib.crc32(body, zlib.crc32(view[:_CRC_AT])) != crc:
        raise InvalidPackageError(
            f"entropy stream corrupt or truncated: CRC-32 mismatch over {len(view)} bytes"
        )
    symbols, counts = _decode_table(body[:table_len], n_symbols, count, width)
    out = np.empty(count, dtype=np.uint8 if width == 8 else np.uint16)
    if n_symbols > 1 and chunk == 0:
        raise InvalidPackageError("entropy stream chunk size is 0")
    expected_chunks = -(-count // chunk) if n_symbols > 1 else 0
    if n_chunks != expected_chunks:
        raise InvalidPackageError(
            f"entropy stream has {n_chunks=}, expected {expected_chunks} for {count=}"
        )
    if n_symbols <= 1:
        if table_len != len(body):
            raise InvalidPackageError(
                f"entropy stream has {len(body) - table_len} bytes after the table, expected 0"
            )
        out[:] = symbols[0] if n_symbols == 1 else 0
        return out
    offset = table_len + 4 * n_chunks
    lengths = np.frombuffer(body[table_len:offset], dtype="<u4").astype(np.int64)
    if offset + 4 * int(lengths.sum()) != len(body):
        raise InvalidPackageError(
            f"entropy stream body is {len(body)} bytes, the chunk table says "
            f"{offset + 4 * int(lengths.sum())}"
        )
    model = _model(counts)
    alphabet = symbols.astype(out.dtype)  # the gather below then writes the output type
    for index, words_n in enumerate(lengths):
        start = index * chunk
        n = min(chunk, count - start)
        words = np.frombuffer(body[offset : offset + 4 * words_n], dtype="<u4").astype(np.uint32)
        offset += 4 * words_n
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            dense = coder.decode(model, n)
        except ValueError as exc:
            raise InvalidPackageError(f"entropy stream chunk {index} is corrupt: {exc}") from exc
        if not coder.is_empty():
            raise InvalidPackageError(
                f"entropy stream chunk {index} is corrupt: words left after {n} symbols"
            )
        out[start : start + n] = alphabet[dense]
    return out


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
    """Distinct symbols and their counts, checked against the header."""
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
