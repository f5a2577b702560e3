"""Weights-only models: ``.safetensors`` and ``.npz`` files, read and written.

Reading gives a ``WeightsModel``: every array with a role guessed from its name and shape
(a weights file has no graph): arrays of two or more dimensions are weights with the output
channels on axis 0 (PyTorch's layout); one-dimensional arrays are normalisation parameters
when the name says so (``norm``, ``bn``, ``ln``, ``running_``), else biases.

safetensors is parsed directly (8-byte little-endian header length, JSON header, data) so
that every dtype, bfloat16 included, is read, and arrays are memory-mapped (each when it is
asked for), never copied whole; an ``.npz``'s stored members are mapped the same way
(``npz_arrays``). Both readers check every size a file declares before memory is taken
(``safetensors_header``, ``npz``), against ``InputLimits`` when given. Writing keeps the
input's order of tensors and its ``__metadata__``; both writers are deterministic (same
arrays, same bytes).
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantcore.errors import InvalidModelError
from quantcore.formats.model import LazyArrays, ModelFormat, WeightTensor
from quantcore.formats.npz import scan_npz
from quantcore.formats.npz_arrays import NpzArrays
from quantcore.formats.roles import Role
from quantcore.formats.safetensors_header import (
    SAFETENSORS_DTYPES,
    SafetensorsHeader,
    read_header,
)
from quantcore.limits import InputLimits

_CODE_OF = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
_NORM_NAME = re.compile(r"(norm|(^|[._])(bn|ln)\d*([._]|$)|running_)", re.IGNORECASE)


def guess_role(name: str, shape: tuple[int, ...]) -> tuple[Role, int | None]:
    """Role and channel axis of a named array of a weights-only file."""
    if len(shape) >= 2:
        return Role.WEIGHT, 0
    if _NORM_NAME.search(name):
        return Role.NORM, None
    return Role.BIAS, None


class WeightsModel:
    """The arrays of a ``.safetensors`` or ``.npz`` file, in file order."""

    def __init__(
        self,
        path: Path,
        fmt: ModelFormat,
        arrays: LazyArrays,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.arrays = arrays
        self.metadata = metadata or {}
        tensors = []
        for name, shape, dtype in arrays.layout():
            role, axis = guess_role(name, shape)
            tensors.append(
                WeightTensor(
                    name=name,
                    shape=shape,
                    dtype=dtype.name,
                    role=role,
                    channel_axis=axis,
                    # (out, in, ...) as frameworks store them: blocks along the input axis
                    block_axis=1 if axis == 0 and len(shape) >= 2 else None,
                    block_trailing=True,
                    used_by="",
                    where=f"{fmt.value} file",
                )
            )
        self.tensors = tuple(tensors)

    def array(self, name: str, *, aligned: bool = True) -> np.ndarray:
        return self.arrays[name]  # as the file's reader maps or reads it (aligned or not)

    def close(self) -> None:
        """Nothing to free: arrays are read (safetensors and stored ``.npz`` members mapped)
        when asked for, and dropped by the caller."""


def read_safetensors(path: Path, limits: InputLimits | None = None) -> WeightsModel:
    """Parse a safetensors file; its header is checked whole before any tensor is mapped
    (``quantcore.formats.safetensors_header``). Raises ``InvalidModelError`` naming what is
    wrong, ``InputTooLargeError`` past ``limits``."""
    header = read_header(path, limits)
    return WeightsModel(path, ModelFormat.SAFETENSORS, _MappedTensors(path, header),
                        header.metadata)  # fmt: skip


class _MappedTensors(LazyArrays):
    """A safetensors file's arrays, each mapped from the file when asked for and unmapped
    when the caller drops it: the pages a job reads leave the process with each tensor
    instead of piling up to the file's size."""

    def __init__(self, path: Path, header: SafetensorsHeader) -> None:
        self._path = path
        self._offset = header.data_offset
        self._entries = {entry.name: entry for entry in header.tensors}

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        if entry.end == entry.begin:
            return np.zeros(entry.shape, entry.dtype)
        start, length = self._offset + entry.begin, entry.end - entry.begin
        mapped = np.memmap(self._path, dtype=np.uint8, mode="r", offset=start, shape=(length,))
        return mapped.view(np.ndarray).view(entry.dtype).reshape(entry.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def layout(self) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
        return ((e.name, tuple(e.shape), e.dtype) for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


def read_npz(path: Path, limits: InputLimits | None = None) -> WeightsModel:
    """The arrays of an ``.npz`` (no pickles) once its headers are checked
    (``quantcore.formats.npz``), each read when asked for (``npz_arrays``: stored members
    memory-mapped); raises ``InvalidModelError``, ``InputTooLargeError`` past ``limits``."""
    members = scan_npz(path, limits, error=InvalidModelError)
    return WeightsModel(path, ModelFormat.NPZ, NpzArrays(path, members))


def write_safetensors(
    path: Path, arrays: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str] | None = None
) -> None:
    """Write ``arrays`` in the given order; the header is padded to 8 bytes with spaces."""
    items = list(arrays)
    layout = [(name, array.dtype, tuple(array.shape)) for name, array in items]
    write_safetensors_streamed(path, layout, (array for _, array in items), metadata)


def write_safetensors_streamed(
    path: Path,
    layout: Sequence[tuple[str, np.dtype, tuple[int, ...]]],
    arrays: Iterable[np.ndarray],
    metadata: dict[str, str] | None = None,
) -> None:
    """``write_safetensors`` of arrays made one at a time: the header from ``layout`` (name,
    dtype and shape of each, in order), then each array of ``arrays`` as it comes, so that
    only one is held (the same bytes as ``write_safetensors``)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in layout:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": _CODE_OF[_little_dtype(dtype)],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for (name, dtype, shape), array in zip(layout, arrays, strict=True):
            data = np.ascontiguousarray(_little(array))
            if data.dtype != _little_dtype(dtype) or tuple(data.shape) != tuple(shape):
                raise ValueError(f"{name}: {data.dtype}{data.shape} where the header has "
                                 f"{dtype}{tuple(shape)}")  # fmt: skip
            handle.write(data.reshape(-1).view(np.uint8).data)


def _little_dtype(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _little(array: np.ndarray) -> np.ndarray:
    if array.dtype.byteorder == ">":
        return array.astype(array.dtype.newbyteorder("<"))
    return array


def write_npz(path: Path, arrays: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` in the given order, with fixed timestamps
    so that the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
