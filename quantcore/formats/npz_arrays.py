"""An ``.npz`` archive's arrays, each read when it is asked for (``weights_io.read_npz``).

NumPy's ``np.load`` reads a member whole when it is indexed, and a job that held every array
of the archive held the whole model. Here a stored member (``np.savez``) is memory-mapped
from the archive, as safetensors arrays are, and a deflated one (``np.savez_compressed``)
inflated each time it is asked for; the caller drops each after use, so what stays is the
tensors being worked on. The archive is ``scan_npz``-checked before (sizes, dtypes, members),
and each member read through once when it is opened (its CRC-32).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Literal

import numpy as np

from quantcore.errors import InvalidModelError
from quantcore.formats.model import LazyArrays
from quantcore.formats.npz import CHUNK_BYTES, READ_ERRORS, NpzMember, read_npy_header

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"


class NpzArrays(LazyArrays):
    """The arrays of the archive at ``path`` (its checked ``members``), read one at a time."""

    def __init__(self, path: Path, members: Sequence[NpzMember]) -> None:
        self._path = path
        self._members = {m.name: m for m in members}
        self._offsets: dict[str, int] = {}  # where each stored member's data starts
        size = path.stat().st_size
        try:
            with zipfile.ZipFile(path) as archive, path.open("rb") as handle:
                for m in members:
                    info = archive.getinfo(m.member)
                    _check_crc(archive, info)
                    if info.compress_type == zipfile.ZIP_STORED:
                        self._offsets[m.name] = _data_offset(handle, info, m, size)
        except READ_ERRORS as exc:
            raise InvalidModelError(f"{path.name} is not a readable .npz archive: {exc}") from None

    def __getitem__(self, name: str) -> np.ndarray:
        m = self._members[name]
        order: Literal["C", "F"] = "F" if m.fortran_order else "C"
        if m.nbytes == 0:
            return np.zeros(m.shape, m.dtype, order=order)
        at = self._offsets.get(name)
        if at is None:
            return self._inflate(m)
        mapped = np.memmap(self._path, dtype=m.dtype, mode="r", offset=at, shape=m.shape,
                           order=order)  # fmt: skip
        array = mapped.view(np.ndarray)
        # A member's data starts wherever its zip and .npy headers end: where that is not a
        # multiple of the item size, a copy (compiled kernels take aligned arrays).
        return array if array.flags.aligned else array.copy(order="K")

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def layout(self) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
        return ((m.name, m.shape, m.dtype) for m in self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def _inflate(self, m: NpzMember) -> np.ndarray:
        try:
            with zipfile.ZipFile(self._path) as archive, archive.open(m.member) as stream:
                array = np.lib.format.read_array(stream, allow_pickle=False)
        except READ_ERRORS as exc:
            raise InvalidModelError(
                f"{self._path.name}: array {m.name!r} cannot be read: {exc}"
            ) from None
        if array.dtype != m.dtype or array.shape != m.shape:
            raise InvalidModelError(f"{self._path.name}: array {m.name!r} changed since it was "
                                    "checked")  # fmt: skip
        return array


def _check_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read a member through once, a chunk at a time: ``zipfile`` checks its CRC-32 at the
    end (and stops a deflated one at its declared size), so a corrupt or lying archive is
    refused when it is opened, as when ``np.load`` read it whole, not midway through a job."""
    with archive.open(info) as stream:
        while stream.read(CHUNK_BYTES):
            pass


def _data_offset(handle: IO[bytes], info: zipfile.ZipInfo, m: NpzMember, size: int) -> int:
    """Where a stored member's array data starts: past its local zip header (whose name and
    extra field lengths may differ from the directory's) and its ``.npy`` header, which must
    say what the directory's copy said."""
    where = f"{info.filename!r}"
    handle.seek(info.header_offset)
    head = handle.read(_LOCAL_HEADER.size)
    if len(head) < _LOCAL_HEADER.size:
        raise InvalidModelError(f"npz member {where}: its local header is truncated")
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(head)
    if signature != _LOCAL_SIGNATURE:
        raise InvalidModelError(f"npz member {where}: no local header where the directory says")
    handle.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    shape, fortran, dtype = read_npy_header(handle, f"npz member {where}", InvalidModelError)
    start = handle.tell()
    if (shape, fortran, dtype) != (m.shape, m.fortran_order, m.dtype) or start + m.nbytes > size:
        raise InvalidModelError(f"npz member {where}: its data does not match its header")
    return start
