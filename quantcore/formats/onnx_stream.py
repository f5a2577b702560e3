"""Writing ``model.onnx`` without holding its codes: each code tensor's bytes are made when
their turn comes in the file, one tensor at a time.

The model is given as its *skeleton* (the written ``ModelProto`` whose code initializers have
a name, type and shape but no ``raw_data``) and, per code initializer, a ``CodeData`` that
makes the tensor's ``raw_data`` on demand. The files are byte for byte what
``onnx_writer.save_onnx`` writes for the same model with the codes filled in:

- under ``MAX_INLINE_BYTES`` one ``model.onnx``: protobuf's encoding (fields in field-number
  order, each submessage behind its length) is spliced together here, the messages on the
  way to a code tensor (model, graph, node, attribute, subgraph) encoded field by field and
  every other field by protobuf itself, so only lengths need to be known before writing;
- past it ``model.onnx`` + ``model.onnx.data`` laid out as ``onnx.save_model`` lays them out
  (``all_tensors_to_one_file``, ``size_threshold=1024``): initializers in the order onnx
  visits them, each whose ``raw_data`` object is 1 KiB or more appended to the data file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper

from quantcore.formats import onnx_writer
from quantcore.formats.graph_copy import copy_field
from quantcore.formats.onnx_wire import encode_varint, length_tag
from quantcore.formats.onnx_writer import EXTERNAL_SUFFIX

_FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4})
# onnx.save_model's test: sys.getsizeof(raw_data) >= size_threshold (a bytes object's size).
_BYTES_OVERHEAD = sys.getsizeof(b"")
SIZE_THRESHOLD = 1024
_RAW_DATA_FIELD = 9  # TensorProto.raw_data
# Message fields that may lead to a code tensor: graph, initializer, node, attribute, g, graphs.
_PATH_FIELDS = {
    onnx.ModelProto: {"graph"},
    onnx.GraphProto: {"node", "initializer"},
    onnx.NodeProto: {"attribute"},
    onnx.AttributeProto: {"g", "graphs"},
}


@dataclass(frozen=True, kw_only=True)
class CodeData:
    """One code tensor's ``raw_data``: its length, and how to make it when it is written."""

    nbytes: int
    make: Callable[[], bytes]


def code_nbytes(count: int, elem_type: int) -> int:
    """The ``raw_data`` length of ``count`` codes stored as ``elem_type``."""
    if elem_type in _FOUR_BIT:
        return (count + 1) // 2
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


@dataclass(frozen=True, kw_only=True)
class SavedOnnx:
    paths: tuple[Path, ...]
    # Where each code initializer's raw_data is in model.onnx, as (offset, length), when it is
    # one file (what qpack_writer.PackageWriter.finish cuts out); None with external data.
    regions: dict[str, tuple[int, int]] | None


# A piece of the encoding: bytes as they are, or a code tensor's raw_data, by initializer name.
Piece = bytes | str


class _Splicer:
    """The encoding of a model as pieces, with each code tensor's ``raw_data`` left as a name."""

    def __init__(self, codes: Mapping[str, CodeData]) -> None:
        self.codes = codes

    def holds(self, message: Message) -> bool:
        """Whether a code tensor lies inside ``message`` (a model, graph, node or attribute)."""
        if isinstance(message, onnx.TensorProto):
            return message.name in self.codes and not message.HasField("raw_data")
        fields = _PATH_FIELDS.get(type(message))
        if fields is None:
            return False
        for field, value in message.ListFields():
            if field.name in fields:
                items = value if _repeated(field) else [value]
                if any(self.holds(item) for item in items):
                    return True
        return False

    def pieces(self, message: Message) -> tuple[list[Piece], int]:
        """``message``'s encoding as pieces, and its length with the codes in."""
        if isinstance(message, onnx.TensorProto):
            head = message.SerializeToString()
            if any(f.number > _RAW_DATA_FIELD for f, _ in message.ListFields()):
                raise ValueError(f"code tensor {message.name!r} has fields after raw_data")
            size = self.codes[message.name].nbytes
            prefix = head + length_tag(_RAW_DATA_FIELD) + encode_varint(size)
            return [prefix, message.name], len(prefix) + size
        out: list[Piece] = []
        total = 0
        fields = _PATH_FIELDS[type(message)]
        for field, value in message.ListFields():
            if field.name not in fields:
                single = type(message)()
                copy_field(single, field, value)
                data = single.SerializeToString()
                out.append(data)
                total += len(data)
                continue
            for item in value if _repeated(field) else [value]:
                if self.holds(item):
                    inner, size = self.pieces(item)
                    head = length_tag(field.number) + encode_varint(size)
                    out.append(head)
                    out.extend(inner)
                    total += len(head) + size
                else:
                    data = item.SerializeToString()
                    head = length_tag(field.number) + encode_varint(len(data))
                    out.append(head + data)
                    total += len(head) + len(data)
        return out, total


def _repeated(field: object) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf before 5.28
        return bool(field.label == field.LABEL_REPEATED)  # type: ignore[attr-defined]
    return bool(repeated)


def needs_external_data(skeleton: onnx.ModelProto, codes: Mapping[str, CodeData]) -> bool:
    """Whether the model is written with external data (its encoding would reach
    ``MAX_INLINE_BYTES``)."""
    return _Splicer(codes).pieces(skeleton)[1] >= onnx_writer.MAX_INLINE_BYTES


def save_onnx_streamed(
    skeleton: onnx.ModelProto, path: Path, codes: Mapping[str, CodeData]
) -> SavedOnnx:
    """Write the model whose code initializers ``codes`` fills (module docstring); past 2 GB
    the skeleton's own large tensors move to the data file (its ``raw_data`` is cleared)."""
    splicer = _Splicer(codes)
    pieces, size = splicer.pieces(skeleton)
    if size < onnx_writer.MAX_INLINE_BYTES:  # looked up here: tests scale the limit down
        regions = {}
        with path.open("wb") as out:
            for piece in pieces:
                data = piece if isinstance(piece, bytes) else _made(codes, piece)
                if isinstance(piece, str):
                    regions[piece] = (out.tell(), len(data))
                out.write(data)
                del data
        return SavedOnnx(paths=(path,), regions=regions)
    del pieces
    return SavedOnnx(paths=_save_external(skeleton, path, codes), regions=None)


def _made(codes: Mapping[str, CodeData], name: str) -> bytes:
    data = codes[name].make()
    if len(data) != codes[name].nbytes:
        raise ValueError(f"codes of {name!r}: {len(data)} bytes, expected {codes[name].nbytes}")
    return data


def _initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers in the order ``onnx.external_data_helper`` visits them."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _initializers(sub)


def _save_external(
    skeleton: onnx.ModelProto, path: Path, codes: Mapping[str, CodeData]
) -> tuple[Path, ...]:
    external = path.with_name(path.name + EXTERNAL_SUFFIX)
    with external.open("wb") as data_file:
        for tensor in _initializers(skeleton.graph):
            if tensor.name in codes and not tensor.HasField("raw_data"):
                nbytes = codes[tensor.name].nbytes
                if nbytes + _BYTES_OVERHEAD < SIZE_THRESHOLD:  # stays inline, as onnx keeps it
                    tensor.raw_data = _made(codes, tensor.name)
                    continue
                _append(data_file, tensor, external.name, _made(codes, tensor.name))
            elif (
                tensor.HasField("raw_data")
                and len(tensor.raw_data) + _BYTES_OVERHEAD >= SIZE_THRESHOLD
            ):
                _append(data_file, tensor, external.name, tensor.raw_data)
                tensor.ClearField("raw_data")
    path.write_bytes(skeleton.SerializeToString())
    return (path, external)


def _append(data_file: IO[bytes], tensor: onnx.TensorProto, location: str, data: bytes) -> None:
    offset = data_file.tell()
    data_file.write(data)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", len(data))):
        entry = tensor.external_data.add()
        entry.key = key
        entry.value = str(value)
