"""Reading ONNX external data safely: only files inside the model's own folder.

A tensor stored outside the model names a ``location`` relative to the model's folder, an
``offset`` and a ``length``. ``resolve_location`` refuses, with ``UnsafeExternalDataError``,
any location that is absolute, climbs out with ``..``, passes through a symbolic link, or
does not exist as a regular file; ``read_external`` also refuses a range past the file's end.

External data is memory-mapped, not read: a tensor costs no memory until its pages are
touched, and a reader that samples rows of it (the report's histograms) touches only those.
A model's own large initializers are read the same way, from the model file itself
(``ModelFile``): the reader parses the model without them (``onnx_wire.skeleton``), and
``inline_stored`` puts their bytes back into such a graph for a reader that will not read the
model file as external data (``onnx``'s loader refuses a file with several hard links).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import numpy as np
import onnx

from quantcore.errors import UnsafeExternalDataError


@dataclass(frozen=True)
class ModelFile:
    """A model file held open: external references whose ``location`` is its ``name`` are
    read from it, without the checks a separate file needs (it is the model itself, already
    opened). Each read maps its own range, so that a tensor's pages leave the process with
    the last array that uses them, as external data's do."""

    name: str
    file: BinaryIO
    size: int

    def read(self, offset: int, length: int) -> np.ndarray:
        """``length`` bytes at ``offset`` (in the file), mapped read-only."""
        if length == 0:
            return np.zeros(0, np.uint8)  # mmap refuses an empty range
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(self.file.fileno(), offset + length - start, offset=start,
                           access=mmap.ACCESS_READ)  # fmt: skip
        return np.frombuffer(mapped, np.uint8, count=length, offset=offset - start)

    def close(self) -> None:
        self.file.close()  # arrays already read keep their own mappings


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def stored_in(tensor: onnx.TensorProto, location: str) -> bool:
    """Whether ``tensor`` is external data in the file ``location`` names."""
    return is_external(tensor) and external_info(tensor).get("location") == location


def inline_stored(graph: onnx.ModelProto, path: Path, names: set[str] | None = None) -> None:
    """Put back into ``graph`` (``read_graph(path)``, changed or not) the bytes of the
    initializers it left in ``path`` (of those named ``names``, or all), for a reader that
    will not read the model file as external data."""
    with path.open("rb") as file:
        model_file = ModelFile(path.name, file, os.fstat(file.fileno()).st_size)
        for tensor in graph.graph.initializer:
            if stored_in(tensor, path.name) and (names is None or tensor.name in names):
                # Its size was checked against its dims when the graph was read in place.
                length = int(external_info(tensor)["length"])
                stored = read_external(tensor, path.parent, length, model_file)
                set_raw_data(tensor, stored.tobytes())


def set_raw_data(tensor: onnx.TensorProto, data: bytes) -> None:
    """``tensor`` holding ``data`` in ``raw_data`` in place of its external reference (every
    other field kept)."""
    del tensor.external_data[:]
    tensor.ClearField("data_location")
    tensor.raw_data = data


def resolve_location(base_dir: Path, location: str, tensor_name: str) -> Path:
    """The file that ``location`` names, checked to lie inside ``base_dir`` without links."""
    where = f"external data of tensor {tensor_name!r} at location={location!r}"
    if not location:
        raise UnsafeExternalDataError(f"{where}: the location is empty")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise UnsafeExternalDataError(f"{where}: absolute paths are refused")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafeExternalDataError(f"{where}: '..' would leave the model's folder")
    base = base_dir.resolve()
    path = base
    for part in posix.parts:
        path = path / part
        if path.is_symlink():
            raise UnsafeExternalDataError(f"{where}: {part!r} is a symbolic link, refused")
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(base):
        raise UnsafeExternalDataError(f"{where}: resolves outside the model's folder")
    if not real.is_file():
        raise UnsafeExternalDataError(f"{where}: no such file next to the model")
    return real


def read_external(
    tensor: onnx.TensorProto, base_dir: Path, nbytes: int, model_file: ModelFile | None = None
) -> np.ndarray:
    """The ``nbytes`` raw bytes of an external tensor as a read-only ``uint8`` array mapped
    from the file (the mapping lives as long as the array or a view of it)."""
    info = external_info(tensor)
    where = f"external data of tensor {tensor.name!r} in {info.get('location')!r}"
    if model_file is not None and info.get("location") == model_file.name:
        return model_file.read(*_checked_range(info, nbytes, model_file.size, where))
    path = resolve_location(base_dir, info.get("location", ""), tensor.name)
    offset, length = _checked_range(info, nbytes, path.stat().st_size, where)
    if length == 0:
        return np.zeros(0, np.uint8)  # mmap refuses an empty range
    mapped = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(length,))
    return mapped.view(np.ndarray)  # a plain array (results of NumPy calls are not memmaps)


def _checked_range(info: dict[str, str], nbytes: int, size: int, where: str) -> tuple[int, int]:
    """``(offset, length)`` of the tensor's bytes, checked against its ``nbytes`` and the
    ``size`` of the file that holds them."""
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(nbytes)))
    except ValueError:
        raise UnsafeExternalDataError(f"{where}: offset or length is not a number") from None
    if length != nbytes:
        raise UnsafeExternalDataError(
            f"{where}: {length=} bytes, but the tensor's shape and type need {nbytes}"
        )
    if offset < 0 or offset + length > size:
        raise UnsafeExternalDataError(
            f"{where}: bytes [{offset}, {offset + length}) lie past the end of the "
            f"{size}-byte file (truncated?)"
        )
    return offset, length
