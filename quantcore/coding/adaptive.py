"""Stream ``QENT`` version 4: small inputs, coded with adaptive binary contexts and no table.

A v2 or v3 stream spends about 50 bytes before its first code (a 36-byte header, a zstd
table) and 64 more on its eight rANS lanes' final states: nothing for a large tensor, but the
whole cost of a small one at low rate (ocr-det at 3.9 dB of weight SQNR: 5.7 kB of overhead
in 13.8 kB of code sections). Version 4 has a header of 10 to 16 bytes, no table (the
probabilities are learnt as the codes go: ``quantcore.coding.adaptive_kernels``) and one
range coder; a constant input is the header alone. Its decoder is a bit at a time, so it is
written only for inputs of at most ``MAX_CODES`` codes, and only where it is smaller than
the stream version 2 or 3 would write (``entropy.encode_codes`` compares the two).

Layout (integers little-endian; varints are LEB128)::

    magic b"QENT", version 4 (1 byte), flags (1 byte: bit 0 the codes are 16-bit wide,
    bit 1 every code equals the mode), count (varint), mode (varint),
    CRC-32 of the bytes before it and of the payload (4 bytes),
    payload: the range coder's bytes (none for a constant input)
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType

import numpy as np
import numpy.typing as npt

from quantcore.coding import rans
from quantcore.coding.symbols import MAGIC, CodeArray
from quantcore.errors import InvalidPackageError

VERSION = 4
MAX_CODES = 1 << 16
WIDE, CONSTANT = 1, 2
_kernels: ModuleType | None = None


def kernels() -> ModuleType:
    global _kernels
    if _kernels is None:
        from quantcore.coding import adaptive_kernels

        _kernels = adaptive_kernels
    return _kernels


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(view) or shift > 35:
            raise InvalidPackageError("entropy stream v4 header is truncated")
        byte = view[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def encode(flat: CodeArray, counts: npt.NDArray[np.int64]) -> bytes:
    """The v4 stream of ``flat`` (whose bincount is ``counts``)."""
    wide = flat.dtype.itemsize == 2
    mode = int(np.argmax(counts)) if flat.size else 0
    constant = flat.size == 0 or int(counts[mode]) == flat.size
    payload = b""
    if not constant:
        out = np.zeros(72 * flat.size + 16, dtype=np.uint8)
        end = kernels().encode(flat, mode, out)
        payload = out[1:end].tobytes()  # LZMA's first byte is always zero
    flags = (WIDE if wide else 0) | (CONSTANT if constant else 0)
    head = MAGIC + bytes([VERSION, flags]) + _varint(flat.size) + _varint(mode)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def plan(view: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype and the one chunk of a v4 stream, after checking its header and CRC."""
    if len(view) < 6 + 2 + 4 or view[5] & ~(WIDE | CONSTANT):
        raise InvalidPackageError("entropy stream v4 header is truncated or corrupt")
    flags = view[5]
    count, at = _read_varint(view, 6)
    mode, at = _read_varint(view, at)
    if at + 4 > len(view):
        raise InvalidPackageError("entropy stream v4 header is truncated")
    (crc,) = struct.unpack_from("<I", view, at)
    payload = view[at + 4 :]
    if zlib.crc32(payload, zlib.crc32(view[:at])) != crc:
        raise InvalidPackageError(
            f"entropy stream corrupt or truncated: CRC-32 mismatch over {len(view)} bytes"
        )
    width = 16 if flags & WIDE else 8
    dtype = np.dtype(np.uint16 if flags & WIDE else np.uint8)
    if count > MAX_CODES or mode >= 1 << width or (not flags & CONSTANT and not payload):
        raise InvalidPackageError(f"entropy stream v4 has {count=}, {mode=}")
    if not count:
        return dtype, []
    data = np.frombuffer(payload, dtype=np.uint8)

    def fill(part: CodeArray) -> None:
        if flags & CONSTANT:
            part[:] = mode
        elif not kernels().decode(data, mode, (1 << width) - 1, part):
            raise InvalidPackageError(
                f"entropy stream v4 is corrupt: its payload does not decode to {count} codes"
            )

    return dtype, [rans.Chunk(0, count, fill)]


def compile_kernels() -> None:
    """Compile (or load) the v4 kernels for 8- and 16-bit codes."""
    for dtype in (np.uint8, np.uint16):
        codes: CodeArray = np.array([0, 0, 0, 1, 2, 40, 0, 1] * 4, dtype=dtype)
        _, chunks = plan(memoryview(encode(codes, np.bincount(codes))))
        for c in chunks:
            c.fill(np.empty(c.size, dtype=dtype))
