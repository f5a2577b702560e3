"""Writing ``model.qpack`` while the model is quantized: the same bytes as ``qpack.pack`` builds
in memory, without holding the codes.

Layout 3 puts the tensors' sections first (``qpack_writer.PackageWriter``), so each section
(``qpack.encode_body``, made while quantizing) is appended to the package file as soon as its
tensor is done, in the model's order, as ``pack`` adds them. A tensor's header entry names its
initializer and container type, which only the written model gives: ``describe`` sets the
entries once it exists. ``finish`` then cuts the skeleton from the ``model.onnx`` written
beside it (memory-mapped; the writer of that file knows where each code tensor's ``raw_data``
is), or, for a model past 2 GB, takes the emptied ``ModelProto``: it must then come before
``model.onnx`` is saved, which moves tensors out of the proto.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Mapping, Sequence
from pathlib import Path

from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import CodedTensor, WrittenModel
from quantcore.formats.qpack_proto import tensor_entry
from quantcore.formats.qpack_writer import PackageWriter


class StreamedPackage:
    """A package file being written section by section (module docstring)."""

    def __init__(self, path: Path, fmt: ModelFormat) -> None:
        self.path = path
        self._file = path.open("wb")
        self._writer = PackageWriter(self._file, fmt)

    @property
    def skeleton_bytes(self) -> int:
        return self._writer.skeleton_bytes

    @property
    def code_bytes(self) -> int:
        return self._writer.code_bytes

    def add(self, name: str, body: bytes | memoryview) -> None:
        """Append the section of the tensor ``name`` (its entry comes with ``describe``)."""
        self._writer.add(name, {}, body)

    def describe(
        self,
        written: WrittenModel,
        tensors: Sequence[tuple[str, CodedTensor]],
        entropy_coding: bool,
    ) -> None:
        """Give every added tensor its header entry, from the written model (its codes only
        need their shape and range: mapped codes do)."""
        for name, tensor in tensors:
            self._writer.describe(name, tensor_entry(name, written, tensor, entropy_coding))

    def finish(self, model_path: Path, regions: Mapping[str, tuple[int, int]] | None) -> int:
        """Skeleton, header and trailer, from ``model_path`` (model.onnx as one file), mapped
        (each piece's pages dropped once it is hashed, so the process does not hold the file);
        ``regions``: each code initializer's ``raw_data`` in it, when known."""
        with model_path.open("rb") as model:
            mapped = mmap.mmap(model.fileno(), 0, access=mmap.ACCESS_READ)

        def drop(start: int, length: int) -> None:  # hashed pages leave the process's RSS
            mapped.madvise(mmap.MADV_DONTNEED, start, length)

        try:
            return self._done(self._writer.finish(memoryview(mapped), regions, drop))
        finally:
            with contextlib.suppress(BufferError):  # an error's traceback may hold a view
                mapped.close()

    def finish_proto(self, written: WrittenModel) -> int:
        """``finish`` for a model past 2 GB, before it is saved (``written.proto`` as built)."""
        return self._done(self._writer.finish_proto(written))

    def close(self) -> None:
        self._file.close()

    def _done(self, size: int) -> int:
        self._file.close()
        return size
