"""Bit packing of integer codes at a fixed width of R bits (1 to 16).

Layout: one little-endian bit stream. Code ``i`` occupies stream bits ``[i*R, (i+1)*R)``, its
least significant bit first; stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``. The stream
is ``ceil(count*R / 8)`` bytes long and the unused high bits of the last byte are zero. For
R = 8 and R = 16 this is simply the codes as ``uint8`` / little-endian ``uint16``.
For R = 2 and R = 4 each byte holds whole codes, and is built directly from them.

Codes are non-negative and below ``2**R``: the caller subtracts its ``code_min`` first.

The general width works on groups of eight codes, which always fill exactly R bytes: the
eight codes of a group are shifted into two 64-bit words (low and high half of a 128-bit
group) with a fixed Python loop over the eight slots, vectorised over all groups; the R
meaningful bytes of each group are then cut out of the words' little-endian bytes.
Work is done in slices of ``_CHUNK`` codes so that the temporaries stay a few tens of MB.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcore.errors import InvalidPackageError, InvalidSpecError

CodeArray = npt.NDArray[np.unsignedinteger]

# Codes per slice of work; a multiple of 8 so that slices start on group boundaries.
_CHUNK = 1 << 22


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` codes at ``bits`` bits: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    if count < 0:
        raise InvalidSpecError(f"{count=} must not be negative")
    return (count * bits + 7) // 8


def pack_bits(codes: npt.ArrayLike, bits: int) -> bytes:
    """Pack non-negative integer ``codes`` (any shape, read in C order) at ``bits`` bits each.

    Raises ``InvalidSpecError`` if ``bits`` is not in 1..16, if the codes are not integers,
    or if any code lies outside ``[0, 2**bits - 1]`` (the message names the offending range).
    An empty array packs to ``b""``.
    """
    _check_bits(bits)
    flat = np.asarray(codes).ravel()
    if flat.size == 0:
        return b""
    if flat.dtype.kind not in "iu":
        raise InvalidSpecError(f"codes must be integers, got dtype={flat.dtype.name}")
    lo, hi = int(flat.min()), int(flat.max())
    if lo < 0 or hi >= 1 << bits:
        raise InvalidSpecError(
            f"codes span [{lo}, {hi}], outside [0, {(1 << bits) - 1}] for {bits=}; "
            "subtract code_min before packing"
        )
    if bits == 8:
        return flat.astype(np.uint8, copy=False).tobytes()
    if bits == 16:
        return flat.astype("<u2", copy=False).tobytes()
    if bits == 1:
        return np.packbits(flat.astype(np.uint8, copy=False), bitorder="little").tobytes()
    if bits in (2, 4):
        return _pack_within_bytes(flat.astype(np.uint8, copy=False), bits)
    parts = [_pack_groups(flat[i : i + _CHUNK], bits) for i in range(0, flat.size, _CHUNK)]
    return b"".join(parts)[: packed_size(flat.size, bits)]


def unpack_bits(data: bytes | bytearray | memoryview, bits: int, count: int) -> CodeArray:
    """Unpack ``count`` codes of ``bits`` bits from ``data`` (the inverse of ``pack_bits``).

    Returns a flat ``uint8`` array for ``bits <= 8``, else ``uint16``. Raises
    ``InvalidSpecError`` for ``bits`` outside 1..16 or a negative ``count``, and
    ``InvalidPackageError`` if ``data`` is not exactly ``ceil(count * bits / 8)`` bytes.
    """
    expected = packed_size(count, bits)
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size != expected:
        raise InvalidPackageError(
            f"packed data holds {buf.size} bytes, expected {expected} for {count=} at {bits=}"
        )
    out_dtype = np.uint8 if bits <= 8 else np.uint16
    if count == 0:
        return np.zeros(0, dtype=out_dtype)
    if bits == 8:
        return buf.copy()
    if bits == 16:
        return buf.view("<u2").astype(np.uint16)
    if bits == 1:
        return np.unpackbits(buf, count=count, bitorder="little")
    out: CodeArray = np.empty(count, dtype=out_dtype)
    step = _CHUNK * bits // 8  # bytes per full slice of codes
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        first = start // 8 * bits
        out[start : start + n] = _unpack_groups(buf[first : first + step], bits, n)
    return out


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 16:
        raise InvalidSpecError(f"{bits=} must be an integer between 1 and 16")


def _pack_within_bytes(codes: npt.NDArray[np.uint8], bits: int) -> bytes:
    """Pack at a width that divides 8: each byte holds ``8 // bits`` whole codes, the first in
    its low bits (the same stream as ``_pack_groups``, about ten times faster)."""
    per = 8 // bits
    tail = -codes.size % per
    if tail:
        codes = np.concatenate([codes, np.zeros(tail, dtype=np.uint8)])
    slots = codes.reshape(-1, per)
    out = slots[:, 0].copy()
    for k in range(1, per):
        out |= slots[:, k] << np.uint8(k * bits)
    return out.tobytes()


def _pack_groups(codes: CodeArray, bits: int) -> bytes:
    """Pack a slice whose start is group-aligned; the tail group is zero-padded."""
    groups = -(-codes.size // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[: codes.size] = codes
    slots = padded.reshape(groups, 8)
    words = np.zeros((groups, 2), dtype="<u8")
    low, high = words[:, 0], words[:, 1]
    for k in range(8):
        shift = k * bits
        col = slots[:, k]
        if shift >= 64:
            high |= col << np.uint64(shift - 64)
            continue
        low |= col << np.uint64(shift)
        if shift + bits > 64:  # the code straddles the two words
            high |= col >> np.uint64(64 - shift)
    return words.view(np.uint8)[:, :bits].tobytes()


def _unpack_groups(data: npt.NDArray[np.uint8], bits: int, count: int) -> CodeArray:
    """Unpack ``count`` codes from group-aligned ``data`` (the last group may be partial)."""
    groups = -(-count // 8)
    raw = np.zeros((groups, 16), dtype=np.uint8)
    whole = data.size // bits
    raw[:whole, :bits] = data[: whole * bits].reshape(whole, bits)
    if whole < groups:  # partial last group
        tail = data[whole * bits :]
        raw[whole, : tail.size] = tail
    words = raw.view("<u8")
    low, high = words[:, 0], words[:, 1]
    mask = np.uint64((1 << bits) - 1)
    slots = np.empty((groups, 8), dtype=np.uint64)
    for k in range(8):
        shift = k * bits
        if shift >= 64:
            slots[:, k] = high >> np.uint64(shift - 64)
        elif shift + bits > 64:
            slots[:, k] = (low >> np.uint64(shift)) | (high << np.uint64(64 - shift))
        else:
            slots[:, k] = low >> np.uint64(shift)
    slots &= mask
    out_dtype = np.uint8 if bits <= 8 else np.uint16
    return slots.reshape(-1)[:count].astype(out_dtype)
