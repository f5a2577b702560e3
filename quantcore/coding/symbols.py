"""What both versions of the entropy stream share: the codes' alphabet and counts, the choice
of raw low bits, the header, the CRC and the symbol table (see ``quantcore.coding.entropy``)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import zstandard
from zlib_ng.zlib_ng import crc32  # zlib's CRC-32, with PCLMUL: 28 against 4.5 GB/s

from quantcore.errors import InvalidPackageError, InvalidSpecError

MAGIC = b"QENT"
ALPHABET = 1 << 16
RAW_BITS_TOLERANCE = 1e-3
# Bytes the zstd'd table spends per distinct symbol (measured: about 1.0 for 30K symbols).
TABLE_BYTES_PER_SYMBOL = 1.0
# magic, version, width of the codes (8 or 16), raw_bits, precision (v2; 0 in v1), count,
# distinct high parts, chunk size, table length, number of chunks, CRC-32.
HEADER = struct.Struct("<4sBBBBQIIIII")
CRC_AT = HEADER.size - 4  # the CRC-32 is the header's last field
# Symbols counted per bincount call: bincount widens its input to int64 (8 bytes a symbol).
_COUNT_SLICE = 1 << 20

CodeArray = npt.NDArray[np.unsignedinteger]


def flat_codes(codes: npt.ArrayLike) -> CodeArray:
    """``codes`` flat, as uint8 or uint16; ``InvalidSpecError`` outside ``[0, 65535]``."""
    flat = np.asarray(codes).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if flat.dtype.kind not in "iu":
        raise InvalidSpecError(f"codes must be integers, got dtype={flat.dtype.name}")
    if flat.dtype.itemsize > 2 or flat.dtype.kind == "i":
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= ALPHABET:
            raise InvalidSpecError(
                f"codes span [{lo}, {hi}], outside [0, {ALPHABET - 1}]; "
                "subtract code_min before entropy coding"
            )
        flat = flat.astype(np.uint8 if hi < 256 else np.uint16)
    return flat


def symbol_counts(flat: CodeArray) -> npt.NDArray[np.int64]:
    """Counts of every symbol 0..65535, counted in slices to bound bincount's int64 copy."""
    counts = np.zeros(ALPHABET, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_SLICE):
        counts += np.bincount(flat[start : start + _COUNT_SLICE], minlength=ALPHABET)
    return counts


def given_counts(counts: npt.ArrayLike, size: int) -> npt.NDArray[np.int64]:
    """A caller's bincount of ``size`` codes, padded to the whole alphabet."""
    given = np.asarray(counts)
    total = int(given.sum()) if given.size else 0
    shaped = given.ndim == 1 and given.size <= ALPHABET and given.dtype.kind in "iu"
    if not shaped or total != size or bool((given < 0).any()):
        raise InvalidSpecError(
            f"counts of shape {given.shape} summing to {total} are not a bincount of "
            f"{size} codes below {ALPHABET}"
        )
    padded = np.zeros(ALPHABET, dtype=np.int64)
    padded[: given.size] = given
    return padded


def entropy_from_counts(counts: npt.NDArray[np.int64]) -> float:
    """Order-0 entropy in bits per symbol of the (positive) ``counts``."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    c = counts.astype(np.float64)
    return max(0.0, float(np.log2(total) - (c * np.log2(c)).sum() / total))


def raw_low_bits(counts: npt.NDArray[np.int64]) -> int:
    """How many low bits to store raw: the largest k whose estimated size is within
    ``RAW_BITS_TOLERANCE`` of the smallest.

    Estimated size of k: ``N * (H(code >> k) + k) / 8`` bytes of symbols plus
    ``TABLE_BYTES_PER_SYMBOL`` for each distinct high part in the table. The table term
    matters for small inputs over wide alphabets, where many symbols are seen a few times.
    Zero for an input of zero entropy (nothing to gain).
    """
    total = int(counts.sum())
    if entropy_from_counts(counts[counts > 0]) == 0.0:
        return 0
    sizes = []
    # Bins past the last used code's power of two are empty: every group there is too.
    grouped = counts[: 1 << int(np.flatnonzero(counts)[-1]).bit_length()]
    for k in range(17):
        if k and grouped.size > 1:  # counts of code >> k: pairs of the bins of code >> k-1
            grouped = grouped.reshape(-1, 2).sum(axis=1)
        present = grouped[grouped > 0]
        bits = entropy_from_counts(present) + k
        sizes.append(total * bits / 8 + TABLE_BYTES_PER_SYMBOL * present.size)
    budget = min(sizes) * (1 + RAW_BITS_TOLERANCE)
    return max(k for k, size in enumerate(sizes) if size <= budget)


def seal(fields: tuple[object, ...], body: Sequence[bytes | memoryview]) -> bytes:
    """The stream: the header of ``fields`` (all but the CRC), its CRC-32 over the header and
    every piece of ``body``, then the body."""
    header = HEADER.pack(*fields, 0)[:CRC_AT]
    crc = crc32(header)
    for piece in body:
        crc = crc32(piece, crc)
    return b"".join([header, struct.pack("<I", crc), *body])


def open_stream(
    data: bytes | bytearray | memoryview, versions: tuple[int, ...], *, check_crc: bool = True
) -> tuple:
    """The header fields of a stream (the CRC last) and its body, after checking its length,
    magic, version and (unless ``check_crc`` is False) CRC-32."""
    view = memoryview(data).cast("B")
    if len(view) < HEADER.size:
        raise InvalidPackageError(
            f"entropy stream truncated: {len(view)} bytes, the header alone needs {HEADER.size}"
        )
    fields = HEADER.unpack_from(view)
    magic, version = fields[:2]
    if magic != MAGIC:  # checked before the CRC: the likeliest mistake gets the clearest message
        raise InvalidPackageError(f"not an entropy stream: {magic=}, expected {MAGIC!r}")
    if version not in versions:
        raise InvalidPackageError(
            f"entropy stream {version=} is not supported (only {', '.join(map(str, versions))})"
        )
    body = view[HEADER.size :]
    if check_crc and crc32(body, crc32(view[:CRC_AT])) != fields[-1]:
        raise InvalidPackageError(
            f"entropy stream corrupt or truncated: CRC-32 mismatch over {len(view)} bytes"
        )
    width, raw_bits = fields[2:4]
    if width not in (8, 16) or raw_bits > width:
        raise InvalidPackageError(f"entropy stream has {width=} and {raw_bits=}")
    return fields, body


def encode_table(symbols: npt.NDArray[np.intp], values: npt.NDArray[np.int64], size: int) -> bytes:
    """Symbol deltas (uint16) and one unsigned value of ``size`` bytes per symbol (counts in
    v1, frequencies in v2), split into byte planes, then zstd.

    The planes put the mostly-zero high bytes of the values together, which lets a fast zstd
    level compress the table about as well as its slowest level does on the plain layout.
    """
    deltas = symbols.astype("<u2")  # the first absolute, then the differences
    deltas[1:] -= deltas[:-1].copy()
    planes = [
        deltas.view(np.uint8).reshape(-1, 2).T.tobytes(),
        values.astype(f"<u{size}").view(np.uint8).reshape(-1, size).T.tobytes(),
    ]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(planes))


def decode_table(
    table: memoryview, n_symbols: int, width: int, size: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Distinct symbols of ``width`` bits, increasing, and their positive values."""
    if n_symbols > ALPHABET:
        raise InvalidPackageError(f"entropy stream {n_symbols=} exceeds {ALPHABET}")
    length = (2 + size) * n_symbols
    try:
        raw = zstandard.ZstdDecompressor().decompress(table, max_output_size=max(length, 1))
    except zstandard.ZstdError as exc:
        raise InvalidPackageError(f"entropy stream symbol table is corrupt: {exc}") from exc
    if len(raw) != length:
        raise InvalidPackageError(
            f"entropy stream symbol table holds {len(raw)} bytes, expected {length}"
        )
    planes = np.frombuffer(raw, dtype=np.uint8)
    deltas = np.ascontiguousarray(planes[: 2 * n_symbols].reshape(2, -1).T).view("<u2")
    symbols = np.cumsum(deltas.ravel().astype(np.int64))
    value_bytes = np.ascontiguousarray(planes[2 * n_symbols :].reshape(size, -1).T)
    values = value_bytes.view(f"<u{size}").ravel().astype(np.int64)
    increasing = n_symbols < 2 or bool(np.all(np.diff(symbols) > 0))
    if n_symbols and (not increasing or symbols[-1] >= 1 << width or values.min() <= 0):
        raise InvalidPackageError("entropy stream symbol table is not a valid symbol set")
    return symbols, values


def chunk_sizes(count: int, chunk: int, n_chunks: int, chunked: bool, room: int) -> list[int]:
    """Symbols in each chunk, after checking that the header's chunk fields agree with
    ``count`` and that the chunk table fits in the ``room`` bytes after the symbol table."""
    if chunked and chunk == 0:
        raise InvalidPackageError("entropy stream chunk size is 0")
    expected = -(-count // chunk) if chunked else 0
    if n_chunks != expected:
        raise InvalidPackageError(
            f"entropy stream has {n_chunks=}, expected {expected} for {count=}"
        )
    if 4 * n_chunks > room:
        raise InvalidPackageError(f"entropy stream truncated: {n_chunks} chunks in {room} bytes")
    return [min(chunk, count - i * chunk) for i in range(n_chunks)]
