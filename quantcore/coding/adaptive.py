"""Stream ``QENT`` version 4: small inputs, coded with adaptive binary contexts and no table.

A v2 or v3 stream spends about 50 bytes before its first code (a 36-byte header, a zstd
table) and 64 more on its eight rANS lanes' final states: nothing for a large tensor, but the
whole cost of a small one at low rate (ocr-det at 3.9 dB of weight SQNR: 5.7 kB of overhead
in 13.8 kB of code sections). Version 4 has a header of 10 to 16 bytes, no table (the
probabilities are learnt as the codes go: ``quantcore.coding.adaptive_kernels``) and one
range coder; a constant input is the header alone. Adapting as it goes, it also follows what
a static table averages over: on the real models at low rate, large tensors' v4 streams are
4-25% smaller than their v2/v3 ones. Its decoder takes one flag at a time, 300 M codes/s on
one core under 0.2 bits a code, 55-70 at 1.5-2, 25 at 5, so ``entropy.encode_codes`` writes
it only where decoding stays fast (``fast_enough``) and it is smaller than the stream version
2 or 3 would write.

Layout (integers little-endian; varints are LEB128)::

    magic b"QENT", version 4 (1 byte), flags (1 byte: bit 0 the codes are 16-bit wide,
    bit 1 every code equals the mode), count (varint), mode (varint),
    CRC-32 of the bytes before it and of the payload (4 bytes),
    payload: the range coder's bytes (none for a constant input)

Version 9 is version 4 for trellis-quantized codes (``quantcore.compress.trellis``): the
same layout and binarisation, but what is coded is each code's trellis index ``k`` on the
8-state path (``trellis_kernels.EIGHT_STATES``) instead of its distance from the mode, under
one bank of contexts for each of the two quantizers; ``mode`` holds the code of level 0
(``-code_min``) and bit 1 of the flags is never set. Coding levels with v4 pays about a bit a
code for their parity, which the trellis state knows; coding them with v7 or v8 pays for
their tables, which on a tensor of a few thousand weights is several percent of its bytes
(ocr-det's 59 tensors of up to 64K weights at 24 dB: 4.8% above their indices' entropy
given the quantizer, where the large ones are 0.7% below it). v9 is written for tiny
tensors only (``trellis_fast_enough``).
"""

from __future__ import annotations

import functools
import math
import struct
from types import ModuleType

import numpy as np
import numpy.typing as npt
from zlib_ng.zlib_ng import crc32  # zlib's CRC-32, with PCLMUL: 28 against 4.5 GB/s

from quantcore.coding import rans
from quantcore.coding.symbols import MAGIC, CodeArray
from quantcore.errors import InvalidPackageError

VERSION = 4
TRELLIS_VERSION = 9
# Where v4 may be written, by the bits a code of the v2/v3 stream: tiny inputs at any rate
# (their time is nothing), up to MAX_CODES under 3 bits, up to LARGE_CODES (one chunk, on
# one thread: 15-75 ms) under 2 bits (55 M codes/s or more). The real models' packages then
# decode at 60 M codes/s or more on one core (at 35-50 with every small tensor allowed).
TINY_CODES = 1 << 13
# The most trellis codes v9 may hold (``trellis_fast_enough``).
TRELLIS_TINY_CODES = 1 << 11
MAX_CODES, MAX_BITS = 1 << 16, 3.0
LARGE_CODES, LARGE_BITS = 1 << 22, 2.0
# The share of the table-coded stream's bytes a v4 or v9 stream must save, per bit a code
# (``pays``): 1% at 1 bit a code, 8% at 8.
SAVING_PER_BIT = 0.01
WIDE, CONSTANT = 1, 2


def kernels() -> ModuleType:
    """The compiled kernels, imported (and numba with them) on first use; Python keeps
    the module once imported."""
    from quantcore.coding import adaptive_kernels

    return adaptive_kernels


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
            raise InvalidPackageError(f"entropy stream v{view[4]} header is truncated")
        byte = view[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


def seal(head: bytes, payload: bytes) -> bytes:
    """A tableless stream (v4, v9, v14, v15): ``head`` (magic, version, flags, varints), the CRC-32
    of it and of ``payload``, then ``payload``."""
    crc = crc32(payload, crc32(head))
    return head + struct.pack("<I", crc) + payload


def open_sealed(view: memoryview, varints: int) -> tuple[list[int], memoryview]:
    """The ``varints`` fields after a ``seal``ed stream's flags byte, and its payload, once
    the CRC-32 matches."""
    fields = []
    at = 6
    for _ in range(varints):
        value, at = _read_varint(view, at)
        fields.append(value)
    if at + 4 > len(view):
        raise InvalidPackageError(f"entropy stream v{view[4]} header is truncated")
    (crc,) = struct.unpack_from("<I", view, at)
    payload = view[at + 4 :]
    if crc32(payload, crc32(view[:at])) != crc:
        raise InvalidPackageError(
            f"entropy stream corrupt or truncated: CRC-32 mismatch over {len(view)} bytes"
        )
    return fields, payload


def fast_enough(count: int, stream_bytes: int) -> bool:
    """Whether ``count`` codes that another stream holds in ``stream_bytes`` may be v4."""
    bits = 8 * stream_bytes / max(count, 1)
    return (
        count <= TINY_CODES
        or (count <= MAX_CODES and bits <= MAX_BITS)
        or (count <= LARGE_CODES and bits <= LARGE_BITS)
    )


def pays(tableless_bytes: int, table_bytes: int, count: int) -> bool:
    """Whether a v4 or v9 stream of ``tableless_bytes`` is worth writing in place of the
    table-coded stream of ``table_bytes`` for the same ``count`` codes: it must save at
    least ``b`` percent of them at ``b`` bits a code (``SAVING_PER_BIT``). Its decoder takes
    one flag at a time, about 1.5 flags a bit, so its time a code grows with the rate where a
    table's does not: at 7-8 bits a code, 4-5 M codes a second against 100-200. Without the
    rule, the tiny tensors' v4 streams of 8-bit packages (saving 1-3% of their bytes, 0.04%
    of a package) were half of the packages' decoding time (orientation: 12 of 22 ms), and
    so were the v9 streams of high-rate trellis packages (12 of 25 ms)."""
    return tableless_bytes <= most_bytes(table_bytes, count)


def most_bytes(table_bytes: int, count: int) -> int:
    """The most bytes a v4 or v9 stream may take in place of a table-coded one (``pays``)."""
    bits = 8 * table_bytes / max(count, 1)
    return math.floor(table_bytes * (1 - SAVING_PER_BIT * bits))


def trellis_fast_enough(count: int) -> bool:
    """Whether ``count`` trellis codes may be v9: up to ``TRELLIS_TINY_CODES``, where it
    decodes no slower than the table-coded stream. v9's decoder takes one flag at a time,
    10-20 ns a code at 1.5-3 bits a code (a Zen 4, 2026-12-05); a v12/v13 stream about 3 ns
    a code after a plan of about 20 us (its table and the decoder's slot tables), so they are
    even near 1,800 codes. On ocr-det's trellis packages at 10.4, 13.4 and 22.1 dB, v9 up to
    2,048 codes in place of 8,192 decoded them 1.16, 1.20 and 1.24 times as fast for 0.9,
    0.9 and 0.3% more bytes of codes (up to 1,024: about as fast, 0.1% more bytes)."""
    return count <= TRELLIS_TINY_CODES


def encode(
    flat: CodeArray, counts: npt.NDArray[np.int64], limit: int | None = None
) -> bytes | None:
    """The v4 stream of ``flat`` (whose bincount is ``counts``); None if ``limit`` is given
    and the range coder's bytes would pass it."""
    wide = flat.dtype.itemsize == 2
    mode = int(np.argmax(counts)) if flat.size else 0
    constant = flat.size == 0 or int(counts[mode]) == flat.size
    payload = b""
    if not constant:
        most = 72 * flat.size + kernels().SLACK
        out = np.zeros(most if limit is None else min(most, limit + kernels().SLACK),
                       dtype=np.uint8)  # fmt: skip
        end = kernels().encode(flat, mode, out)
        if end < 0:
            return None
        payload = out[1:end].tobytes()  # LZMA's first byte is always zero
    flags = (WIDE if wide else 0) | (CONSTANT if constant else 0)
    return seal(MAGIC + bytes([VERSION, flags]) + _varint(flat.size) + _varint(mode), payload)


@functools.cache
def _steps() -> tuple[npt.NDArray[np.int64], int]:
    """v9's decoder table of the 8-state machine (``adaptive_kernels.decode_trellis``): per
    state and index parity, the next state and its quantizer's bank of contexts; and state
    0's bank."""
    transitions, quantizers = _machine()
    following = transitions.ravel()  # at 2 * state + parity
    contexts = kernels().CONTEXTS
    steps = (following << 16) | quantizers[following] * contexts
    return steps.astype(np.int64), int(quantizers[0]) * contexts


def _machine() -> tuple[np.ndarray, np.ndarray]:
    from quantcore.coding import trellis_coder

    return trellis_coder.machine(trellis_coder.EIGHT_STATE_VERSION)


def encode_trellis(flat: CodeArray, code_min: int, limit: int | None = None) -> bytes | None:
    """The v9 stream of ``flat``, codes of levels ``code + code_min`` on the 8-state trellis
    path; None where a level is off it, ``flat`` is empty or -``code_min`` is not a code, or
    if ``limit`` is given and the range coder's bytes would pass it."""
    wide = flat.dtype.itemsize == 2
    if not flat.size or not 0 <= -code_min < 1 << (8 * flat.dtype.itemsize):
        return None
    most = 72 * flat.size + kernels().SLACK
    out = np.zeros(most if limit is None else min(most, limit + kernels().SLACK), np.uint8)
    transitions, quantizers = _machine()
    end = kernels().encode_trellis(flat, int(code_min), transitions, quantizers, out)
    if end < 0:
        return None
    payload = out[1:end].tobytes()  # LZMA's first byte is always zero
    head = MAGIC + bytes([TRELLIS_VERSION, WIDE if wide else 0])
    return seal(head + _varint(flat.size) + _varint(-code_min), payload)


def plan(view: memoryview) -> tuple[np.dtype, list[rans.Chunk]]:
    """The dtype and the one chunk of a v4 or v9 stream, after checking its header and CRC."""
    trellis = view[4] == TRELLIS_VERSION
    allowed = WIDE if trellis else WIDE | CONSTANT
    name = f"v{view[4]}"
    if len(view) < 6 + 2 + 4 or view[5] & ~allowed:
        raise InvalidPackageError(f"entropy stream {name} header is truncated or corrupt")
    flags = view[5]
    (count, mode), payload = open_sealed(view, 2)
    width = 16 if flags & WIDE else 8
    dtype = np.dtype(np.uint16 if flags & WIDE else np.uint8)
    # v4 writes a constant input as its header alone; v9 may too, its range coder's zeros
    # trimmed (a run of level 0 is all zero bytes).
    empty = not flags & CONSTANT and not payload and not trellis
    if count > LARGE_CODES or mode >= 1 << width or empty:
        raise InvalidPackageError(f"entropy stream {name} has {count=}, {mode=}")
    if not count:
        return dtype, []
    data = np.frombuffer(payload, dtype=np.uint8)

    def fill(part: CodeArray) -> None:
        top = (1 << width) - 1
        if flags & CONSTANT:
            part[:] = mode
        elif trellis:
            ok = kernels().decode_trellis(data, -mode, top, *_steps(), part)
        else:
            ok = kernels().decode(data, mode, top, part)
        if not flags & CONSTANT and not ok:
            raise InvalidPackageError(
                f"entropy stream {name} is corrupt: its payload does not decode to {count} "
                "codes"
            )

    return dtype, [rans.Chunk(0, count, fill)]


def compile_kernels() -> None:
    """Compile (or load) the v4 and v9 kernels for 8- and 16-bit codes."""
    from quantcore.coding.trellis_coder import path_levels

    levels = path_levels([0, 1, 1, 0, -1, 0, 2, -2, 1, 0] * 4)
    for dtype in (np.uint8, np.uint16):
        codes: CodeArray = np.array([0, 0, 0, 1, 2, 40, 0, 1] * 4, dtype=dtype)
        on_path: CodeArray = (levels + 3).astype(dtype)
        for stream in (encode(codes, np.bincount(codes)), encode_trellis(on_path, -3)):
            assert stream is not None
            _, chunks = plan(memoryview(stream))
            for c in chunks:
                c.fill(np.empty(c.size, dtype=dtype))
