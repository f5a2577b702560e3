"""What every layout of ``model.qpack`` shares: the prefix, the header, the codes' sections and
the bounds put on every size a package declares (``quantcore.formats.qpack`` documents the
layouts)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import xxhash
import zstandard

from quantcore.errors import InvalidPackageError
from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import CodedTensor

MAGIC = b"QPACK\r\n\x1a"
VERSION = 4  # written: layout 3, its model pieces hashed with XXH3-128
VERSIONS = (1, 2, 3, 4)  # read
PREFIX = struct.Struct("<8sHHI")  # magic, version, flags, header length (0 in version 3)
TRAILER = struct.Struct("<QI4s")  # version 3: header offset, header length, TRAILER_MAGIC
TRAILER_MAGIC = b"QIDX"
# The header field holding model.onnx's piece hashes, and the hash, by layout version. The
# hashes catch corruption and decoder faults, not forgery (anyone can rewrite the header):
# XXH3-128 (28 GB/s a core) does that as well as SHA-256 (1.9 GB/s with SHA-NI), which took a
# quarter of an unpack's CPU time.
PIECE_HASHES: dict[int, tuple[str, Callable[[Any], str]]] = {
    3: ("piece_sha256", lambda data: hashlib.sha256(data).hexdigest()),
    4: ("piece_xxh3_128", xxhash.xxh3_128_hexdigest),
}
FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})
# A package restores at most this many bytes per byte of its own, or MIN_BOUND: a lying
# header cannot make the reader allocate more (a real model, even of constant codes, has its
# graph and scales in the package too).
MAX_EXPANSION = 4096
MIN_BOUND = 64 << 20


def shifted_codes(coded: CodedTensor) -> np.ndarray:
    """``codes - code_min``, as uint8 when they span less than 256 values, else uint16."""
    span = int(coded.code_max) - int(coded.code_min)
    dtype = np.uint8 if span < 256 else np.uint16
    return (np.asarray(coded.codes) - int(coded.code_min)).astype(dtype)


def code_bits(coded: CodedTensor) -> int:
    return max(1, (int(coded.code_max) - int(coded.code_min)).bit_length())


def output_bound(package_bytes: int) -> int:
    """The most bytes a package of ``package_bytes`` may restore (see ``MAX_EXPANSION``)."""
    return max(MIN_BOUND, MAX_EXPANSION * package_bytes)


def header_int(entry: dict[str, Any], key: str, bound: int, what: str) -> int:
    """``entry[key]`` as an int in ``[0, bound]``; ``InvalidPackageError`` otherwise."""
    value = entry.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= bound:
        raise InvalidPackageError(f"package header is corrupt: {what} {key}={value!r}")
    return value


def code_count(entry: dict[str, Any], bound: int) -> int:
    """The number of codes of a tensor entry (the product of its shape), at most ``bound``."""
    shape = entry.get("shape")
    if not isinstance(shape, list):
        raise InvalidPackageError(f"package header is corrupt: shape {shape!r}")
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            raise InvalidPackageError(f"package header is corrupt: shape {shape!r}")
        count *= dim
    if count > bound:
        raise InvalidPackageError(
            f"package codes of {entry.get('name')!r}: {count} codes, more than a package of "
            "this size can hold"
        )
    return count


def read_header(data: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """The header of a package (its ``version`` added) and the position its sections'
    offsets count from."""
    view = memoryview(data)
    if len(view) < PREFIX.size:
        raise InvalidPackageError(f"package truncated: {len(view)} bytes, less than the prefix")
    magic, version, _, length = PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise InvalidPackageError(f"not a .qpack package: {magic=}, expected {MAGIC!r}")
    if version not in VERSIONS:
        raise InvalidPackageError(
            f"package {version=} is not supported (only {', '.join(map(str, VERSIONS))})"
        )
    if version >= 3:
        begin, length, start = _trailer(view)
    else:
        begin, start = PREFIX.size, PREFIX.size + length
        if start > len(view):
            raise InvalidPackageError(f"package truncated inside its {length}-byte header")
    try:
        header = json.loads(_header_text(bytes(view[begin : begin + length])))
        header["format"] = ModelFormat(header["format"]).value
        header["version"] = version
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidPackageError(f"package header is corrupt: {exc}") from None
    return header, start


ZSTD_FRAME = b"\x28\xb5\x2f\xfd"
HEADER_LIMIT = 64 << 20  # no real header comes near; a frame claiming more is refused


def _header_text(raw: bytes) -> bytes:
    """A header's JSON: layout 3 writes it as a zstd frame (read within ``HEADER_LIMIT``,
    whatever the frame declares); plain JSON, as older writers left it, is read as it is."""
    if not raw.startswith(ZSTD_FRAME):
        return raw
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)) as reader:
            text = reader.read(HEADER_LIMIT + 1)
    except zstandard.ZstdError as exc:
        raise ValueError(f"its zstd frame does not decode ({exc})") from None
    if len(text) > HEADER_LIMIT:
        raise ValueError(f"it inflates past {HEADER_LIMIT} bytes")
    return text


def _trailer(view: memoryview) -> tuple[int, int, int]:
    """Where a version-3 header is and how long; its sections count from byte 0."""
    if len(view) < PREFIX.size + TRAILER.size:
        raise InvalidPackageError(f"package truncated: {len(view)} bytes, no trailer")
    begin, length, magic = TRAILER.unpack_from(view, len(view) - TRAILER.size)
    if magic != TRAILER_MAGIC:
        raise InvalidPackageError("package truncated or corrupt: its trailer is missing")
    if begin < PREFIX.size or begin + length != len(view) - TRAILER.size:
        raise InvalidPackageError(
            f"package truncated or corrupt: its header at [{begin}, {begin + length}) does "
            f"not end at the trailer ({len(view) - TRAILER.size})"
        )
    return begin, length, 0


def package_format(path: Path) -> str:
    """The format (``"onnx"``, ``"safetensors"`` or ``"npz"``) of the model that the package
    at ``path`` restores; only its prefix and header are read."""
    with path.open("rb") as file:
        prefix = file.read(PREFIX.size)
        if len(prefix) < PREFIX.size or not prefix.startswith(MAGIC):
            return str(read_header(prefix)[0]["format"])  # which says why not
        version, length = PREFIX.unpack_from(prefix)[1], PREFIX.unpack_from(prefix)[3]
        if version < 3:
            return str(read_header(prefix + file.read(length))[0]["format"])
        size = file.seek(0, 2)
        if size < PREFIX.size + TRAILER.size:
            raise InvalidPackageError(f"package truncated: {size} bytes, no trailer")
        file.seek(size - TRAILER.size)
        trailer = file.read(TRAILER.size)
        begin, length, _ = TRAILER.unpack(trailer)
        if begin + length != size - TRAILER.size or begin < PREFIX.size:
            return str(read_header(prefix + trailer)[0]["format"])  # says what is wrong
        file.seek(begin)
        text = file.read(length)
    # The same bytes at the same places, without reading the sections.
    stub = prefix + bytes(begin - PREFIX.size) + text + trailer
    return str(read_header(stub)[0]["format"])


def section(view: memoryview, start: int, entry: dict[str, Any], what: str) -> memoryview:
    """The bytes of a section the header places at ``offset``/``length`` from ``start``."""
    begin = start + header_int(entry, "offset", len(view), what)
    length = header_int(entry, "length", len(view), what)
    if begin + length > len(view):
        raise InvalidPackageError(
            f"package truncated: {what} needs bytes [{begin}, {begin + length}) of {len(view)}"
        )
    return view[begin : begin + length]


def narrow_codes(shifted: np.ndarray, code_min: int, elem_type: int) -> np.ndarray:
    """``shifted + code_min`` in the narrowest type that ``code_raw_data`` stores exactly:
    the container's own (sums wrap modulo its width, and the codes fit in it), the low
    nibble for 4-bit containers; int32 for anything else."""
    if elem_type in FOUR_BIT:
        if shifted.dtype == np.uint8:
            return shifted + np.uint8(code_min & 0xF)  # only the low nibble is stored
    else:
        try:
            target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        except (KeyError, TypeError, ValueError):  # not a type: code_raw_data says so
            target = np.dtype(np.float32)
        if target.kind in "iu" and shifted.itemsize <= target.itemsize:
            info = np.iinfo(target)
            if info.min <= code_min <= info.max:
                codes = shifted.astype(target)
                codes += target.type(code_min)  # wraps modulo the width, as it must
                return codes
    return shifted.astype(np.int32) + code_min


def raw_length(count: int, elem_type: int) -> int:
    """Bytes of ``raw_data`` for ``count`` codes stored as ``elem_type``."""
    if elem_type in FOUR_BIT:
        return (count + 1) // 2
    try:
        return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        raise InvalidPackageError(f"package header is corrupt: {elem_type=}") from None
