"""``.npz`` archives (a zip of ``.npy`` arrays) checked before any array is read.

``scan_npz`` reads only the zip's directory and each member's ``.npy`` header, and refuses,
before memory is taken for any array:

- more members than ``max_npz_members``, judged from the end-of-directory record before the
  directory itself is parsed (``zipfile`` builds an object per entry);
- a member that is not an ``.npy`` array, is encrypted, repeats a name, or is compressed with
  anything but deflate (``np.savez_compressed``) or nothing (``np.savez``): bzip2 and LZMA
  inflate a whole input block at once, whatever the reader asks for;
- declared sizes over the limits: an array's shape times its item size over
  ``max_array_bytes``, the members' inflated sizes (their zip headers) together over
  ``max_inflated_bytes``, or over ``max_inflation_ratio`` times the archive's own size;
- a header that does not add up: a negative dimension, or a shape whose bytes differ from
  what the member holds after its header (a 300-byte member cannot hold a (2**30, 1024)
  array).

With ``verify=True`` every deflated member is then inflated in chunks of ``CHUNK_BYTES``, its
bytes counted and dropped, so that an archive whose headers lie is refused while streaming,
in bounded memory (``zipfile`` also stops each member at its declared size and checks its
CRC).

Errors name the archive, the array and the sizes: ``InputTooLargeError``
(``payload_too_large``) for a limit, else the caller's ``error`` class (``InvalidModelError``
for a model, ``InvalidDatasetError`` for an evaluation set).
"""

from __future__ import annotations

import math
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from quantcore.errors import InputTooLargeError, QuantError
from quantcore.limits import INFLATION_RATIO_FLOOR, UNLIMITED, InputLimits, describe_bytes

CHUNK_BYTES = 1 << 20
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_MAX_COMMENT = 0xFFFF
# The most bytes a member's entry in the zip directory is allowed (a long name and zip64
# fields): the directory is parsed whole, so its size is bounded before it is read.
_ENTRY_MAX = 1024
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


@dataclass(frozen=True, kw_only=True)
class NpzMember:
    """One array of an archive as its headers describe it (all sizes checked)."""

    name: str  # the array's name: the member's without ".npy"
    member: str  # the zip member, e.g. "x.npy"
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran_order: bool
    nbytes: int  # shape times item size


# What reading a zip member can raise on a corrupt archive: zlib.error (a bad deflate stream)
# is none of the others and used to escape as an internal error.
ARCHIVE_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, OSError, EOFError, zlib.error)
# ... and numpy's .npy header parser, a ValueError.
READ_ERRORS: tuple[type[Exception], ...] = (ValueError, *ARCHIVE_ERRORS)
# ... and opening a member compressed with a method this zipfile lacks.
OPEN_ERRORS: tuple[type[Exception], ...] = (NotImplementedError, *ARCHIVE_ERRORS)


def read_npy_header(
    stream: IO[bytes], label: str, error: type[QuantError]
) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Shape, Fortran order and dtype of the ``.npy`` header at ``stream``'s position."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        return np.lib.format.read_array_header_2_0(stream)
    except READ_ERRORS as exc:
        raise error(f"{label} is not a readable .npy array: {exc}") from None


def _directory(path: Path, size: int, error: type[QuantError]) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-directory record (zip64 too)."""
    with path.open("rb") as handle:
        tail_start = max(0, size - _EOCD.size - _MAX_COMMENT)
        handle.seek(tail_start)
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            raise error(f"{path.name!r} is not an .npz archive (a zip of .npy arrays): "
                        "no zip directory at its end")
        fields = _EOCD.unpack_from(tail, at)
        entries, cd_size = fields[4], fields[5]
        locator_at = at - _EOCD64_LOCATOR.size
        if locator_at >= 0 and tail[locator_at:locator_at + 4] == b"PK\x06\x07":
            offset = _EOCD64_LOCATOR.unpack_from(tail, locator_at)[2]
            handle.seek(offset)
            record = handle.read(_EOCD64.size)
            if len(record) == _EOCD64.size and record[:4] == b"PK\x06\x06":
                values = _EOCD64.unpack(record)
                entries, cd_size = values[7], values[8]
    return entries, cd_size


def _too_large(what: str, size: int, limit: int, setting: str, **details: Any) -> None:
    raise InputTooLargeError(
        f"{what} {describe_bytes(size)}, over the limit of {describe_bytes(limit)} ({setting})",
        details={**details, "bytes": size, "limit_bytes": limit, "limit": setting},
    )


def _too_many(label: str, entries: int, cd_size: int, limits: InputLimits) -> None:
    raise InputTooLargeError(
        f"{label} has {entries} members in a {cd_size}-byte zip directory; at most "
        f"{limits.max_npz_members} members are accepted (max_npz_members)",
        details={"members": entries, "directory_bytes": cd_size, "limit": "max_npz_members",
                 "limit_members": limits.max_npz_members},
    )


def _check_totals(
    label: str, infos: list[zipfile.ZipInfo], size: int, limits: InputLimits
) -> None:
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_inflated_bytes:
        _too_large(f"{label} inflates to", declared, limits.max_inflated_bytes,
                   "max_inflated_bytes")
    ratio = declared / max(size, 1)
    if declared > INFLATION_RATIO_FLOOR and ratio > limits.max_inflation_ratio:
        raise InputTooLargeError(
            f"{label} inflates {ratio:.0f} times, from {describe_bytes(size)} to "
            f"{describe_bytes(declared)}; the limit is {limits.max_inflation_ratio:g} times "
            "(max_inflation_ratio): arrays of numbers do not compress like that (a zip bomb?)",
            details={"bytes": declared, "stored_bytes": size,
                     "limit": "max_inflation_ratio", "limit_ratio": limits.max_inflation_ratio},
        )


def _member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limits: InputLimits,
    error: type[QuantError],
) -> NpzMember:
    member = info.filename
    where = f"{label}: array {member[:-len('.npy')]!r}"
    if not member.endswith(".npy"):
        raise error(f"{label}: member {member!r} is not a .npy array; an .npz holds only arrays")
    if info.flag_bits & 0x1:
        raise error(f"{where} is encrypted")
    if info.compress_type not in _METHODS:
        method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise error(f"{where} is compressed with {method}; an .npz member is stored "
                    "(np.savez) or deflated (np.savez_compressed)")
    try:
        with archive.open(info) as stream:
            shape, fortran, dtype = read_npy_header(stream, where, error)
            header_bytes = stream.tell()
    except OPEN_ERRORS as exc:
        raise error(f"{where} cannot be read: {exc}") from None
    if dtype.hasobject:
        raise error(f"{where} holds Python objects ({dtype}); only numeric arrays are accepted")
    if any(d < 0 for d in shape):
        raise error(f"{where} declares shape {shape} with a negative dimension")
    nbytes = math.prod(shape) * dtype.itemsize
    name = member[: -len(".npy")]
    if nbytes > limits.max_array_bytes:
        _too_large(f"{where} declares shape {shape} of {dtype}:", nbytes,
                   limits.max_array_bytes, "max_array_bytes", array=name, shape=list(shape))
    if header_bytes + nbytes != info.file_size:
        raise error(
            f"{where} declares shape {shape} of {dtype} ({nbytes} bytes) but the member holds "
            f"{info.file_size - header_bytes} bytes after its header (truncated or corrupt)",
            details={"array": name, "bytes": nbytes,
                     "member_bytes": info.file_size - header_bytes},
        )
    return NpzMember(name=name, member=member, dtype=dtype, shape=tuple(shape),
                     fortran_order=fortran, nbytes=nbytes)


def _verify_inflation(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], label: str, limits: InputLimits,
    error: type[QuantError],
) -> None:
    total = 0
    for info in infos:
        if info.compress_type == zipfile.ZIP_STORED:
            continue  # its bytes are the archive's own: nothing to inflate
        where = f"{label}: array {info.filename[:-len('.npy')]!r}"
        counted = 0
        try:
            with archive.open(info) as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    counted += len(chunk)
                    total += len(chunk)
                    if counted > info.file_size:
                        raise error(f"{where} inflates past the {info.file_size} bytes its "
                                    "zip header declares")
                    if total > limits.max_inflated_bytes:
                        _too_large(f"{label} inflates to more than", total,
                                   limits.max_inflated_bytes, "max_inflated_bytes")
        except ARCHIVE_ERRORS as exc:
            raise error(f"{where} cannot be inflated: {exc}") from None
        if counted != info.file_size:
            raise error(f"{where} inflates to {counted} bytes, not the {info.file_size} its "
                        "zip header declares")


def scan_npz(
    path: Path,
    limits: InputLimits | None = None,
    *,
    error: type[QuantError],
    verify: bool = False,
) -> tuple[NpzMember, ...]:
    """The arrays of the archive at ``path``, checked as the module docstring says."""
    limits = limits or UNLIMITED
    path = Path(path)
    label = repr(path.name)
    size = path.stat().st_size
    entries, cd_size = _directory(path, size, error)
    if cd_size > size:
        raise error(f"{label}: its zip directory claims {cd_size} bytes of a {size}-byte file")
    if entries > limits.max_npz_members or cd_size > limits.max_npz_members * _ENTRY_MAX:
        _too_many(label, entries, cd_size, limits)
    try:
        archive = zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        raise error(f"{label} is not an .npz archive (a zip of .npy arrays): {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_npz_members:
            _too_many(label, len(infos), cd_size, limits)
        if not infos:
            raise error(f"{label} holds no arrays")
        repeated = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
        if repeated:
            raise error(f"{label}: member(s) {', '.join(map(repr, repeated))} appear twice")
        _check_totals(label, infos, size, limits)
        members = tuple(_member(archive, info, label, limits, error) for info in infos)
        if verify:
            _verify_inflation(archive, infos, label, limits, error)
    return members
