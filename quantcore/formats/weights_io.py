"""Weights-only models: ``.safetensors`` and ``.npz`` files, read and written.

Reading gives a ``WeightsModel``: every array with a role guessed from its name and shape
(a weights file has no graph): arrays of two or more dimensions are weights with the output
channels on axis 0 (PyTorch's layout); one-dimensional arrays are normalisation parameters
when the name says so (``norm``, ``bn``, ``ln``, ``running_``), else biases.

safetensors is parsed directly (8-byte little-endian header length, JSON header, data) so
that every dtype, bfloat16 included, is read, and arrays are memory-mapped, never copied
whole. Writing keeps the input's order of tensors and its ``__metadata__``; both writers are
deterministic (same arrays, same bytes).
"""

from __future__ import annotations

import json
import math
import re
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from quantcore.errors import InvalidModelError
from quantcore.formats.model import ModelFormat, WeightTensor
from quantcore.formats.roles import Role

SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_CODE_OF = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
_NORM_NAME = re.compile(r"(norm|(^|[._])(bn|ln)\d*([._]|$)|running_)", re.IGNORECASE)
_MAX_HEADER = 100 * 2**20


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
        arrays: dict[str, np.ndarray],
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.format = fmt
        self.arrays = arrays
        self.metadata = metadata or {}
        tensors = []
        for name, array in arrays.items():
            shape = tuple(int(d) for d in array.shape)
            role, axis = guess_role(name, shape)
            tensors.append(
                WeightTensor(
                    name=name,
                    shape=shape,
                    dtype=array.dtype.name,
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

    def array(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def close(self) -> None:
        """Nothing to free: safetensors arrays are memory-mapped, and the arrays are needed
        again to write the output file."""


def read_safetensors(path: Path) -> WeightsModel:
    """Parse a safetensors file; raises ``InvalidModelError`` naming what is wrong."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InvalidModelError(f"{path.name} is not a safetensors file: {size} bytes")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER):
            raise InvalidModelError(
                f"{path.name} is not a safetensors file (header length {n} > file size {size})"
            )
        try:
            header = json.loads(handle.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidModelError(f"{path.name}: safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidModelError(f"{path.name}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if size > 8 + n else None
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        arrays[name] = _safetensors_array(path.name, name, info, data)
    return WeightsModel(path, ModelFormat.SAFETENSORS, arrays, metadata)


def _safetensors_array(label: str, name: str, info: Any, data: np.ndarray | None) -> np.ndarray:
    try:
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(v) for v in info["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise InvalidModelError(
            f"{label}: tensor {name!r} has an unsupported or malformed entry {info!r}"
        ) from None
    nbytes = math.prod(shape) * dtype.itemsize
    available = 0 if data is None else data.size
    if end - start != nbytes or start < 0 or end > available:
        raise InvalidModelError(
            f"{label}: tensor {name!r} needs {nbytes} bytes at [{start}, {end}) but the data "
            f"section holds {available} (truncated?)"
        )
    if nbytes == 0 or data is None:
        return np.zeros(shape, dtype)
    return data[start:end].view(dtype).reshape(shape)


def read_npz(path: Path) -> WeightsModel:
    """Read every array of an ``.npz`` (no pickles); raises ``InvalidModelError``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidModelError(f"{path.name} is not a readable .npz archive: {exc}") from None
    return WeightsModel(path, ModelFormat.NPZ, arrays)


def write_safetensors(
    path: Path, arrays: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str] | None = None
) -> None:
    """Write ``arrays`` in the given order; the header is padded to 8 bytes with spaces."""
    items = [(name, np.ascontiguousarray(_little(a))) for name, a in arrays]
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, array in items:
        header[name] = {
            "dtype": _CODE_OF[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for _, array in items:
            handle.write(array.tobytes())


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
