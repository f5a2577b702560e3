"""Writing ``model.qpack`` from sections already on disk: the same bytes as ``qpack.pack``
builds in memory, without holding the codes.

The tensors' sections (``qpack.encode_body``, made one tensor at a time while quantizing) are
appended to a *bodies* file in the header's order; the package is then the prefix and header,
the zstd skeleton and that file copied after them. Only the skeleton (graph, scales, float
tensors: no codes) is in memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from quantcore.formats.model import ModelFormat
from quantcore.formats.onnx_writer import CodedTensor, WrittenModel
from quantcore.formats.qpack import ZSTD_LEVEL, header_bytes, tensor_entry

COPY_CHUNK = 16 << 20


@dataclass(frozen=True, kw_only=True)
class WrittenPackage:
    path: Path
    skeleton_bytes: int
    code_bytes: int


def compressed_skeleton(written: WrittenModel) -> tuple[bytes, int]:
    """The package's skeleton section (``written.proto`` is a skeleton: its code tensors have
    no data) and its size before compression."""
    raw = written.proto.SerializeToString()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    return compressor.compress(raw), len(raw)


def write_package(
    path: Path,
    *,
    written: WrittenModel,
    skeleton: tuple[bytes, int],
    tensors: Sequence[tuple[str, CodedTensor]],
    body_lengths: Mapping[str, int],
    bodies_file: Path,
    fmt: ModelFormat,
    entropy_coding: bool,
    onnx_sha256: str | None,
    onnx_size: int | None,
) -> WrittenPackage:
    """Write the package: ``tensors`` in the header's order, their sections laid end to end in
    ``bodies_file`` in that order; ``onnx_sha256`` is None for a model with external data."""
    section, raw_size = skeleton
    onnx_info: dict[str, Any] = {"sha256": None, "size": None, "external_data": True}
    if onnx_sha256 is not None:
        onnx_info = {"sha256": onnx_sha256, "size": onnx_size, "external_data": False}
    header: dict[str, Any] = {
        "format": fmt.value,
        "onnx": onnx_info,
        "skeleton": {"offset": 0, "length": len(section), "raw_size": raw_size,
                     "codec": "zstd"},
        "tensors": [],
    }  # fmt: skip
    offset = len(section)
    for name, tensor in tensors:
        length = body_lengths[name]
        header["tensors"].append(
            tensor_entry(name, written, tensor, entropy_coding, offset, length)
        )
        offset += length
    code_bytes = offset - len(section)
    if bodies_file.stat().st_size != code_bytes:
        raise ValueError(
            f"{bodies_file.name} holds {bodies_file.stat().st_size} bytes, the sections "
            f"{code_bytes}"
        )
    with path.open("wb") as out:
        out.write(header_bytes(header))
        out.write(section)
        with bodies_file.open("rb") as bodies:
            shutil.copyfileobj(bodies, out, COPY_CHUNK)
    return WrittenPackage(path=path, skeleton_bytes=len(section), code_bytes=code_bytes)
