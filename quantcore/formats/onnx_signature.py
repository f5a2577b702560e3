"""An ONNX model's graph inputs and outputs, read without parsing its weights.

What an evaluation set is checked against (``quantcore.evaluate.dataset.check_dataset``) is
the graph's ``input`` and ``output`` lists and the initializers' names. ``signature`` walks
the protobuf wire format of the file (memory-mapped) and parses only those messages, skipping
every other field by its length: a model of gigabytes costs a few of its pages, not its size
in memory, so the service can check a dataset at submission.

Wire format: each field is a varint key ``(number << 3) | type`` then a varint (type 0),
8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import onnx

from quantcore.errors import InvalidModelError

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8


class _Malformed(Exception):
    pass


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed("a varint runs past its message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, bytes of a length-delimited field or None) of a message's fields."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = _varint(data, pos)
            yield number, None
        elif kind == 1 or kind == 5:
            pos += 8 if kind == 1 else 4
            yield number, None
        elif kind == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise _Malformed(f"field {number} runs past its message")
            yield number, data[pos : pos + length]
            pos += length
        else:
            raise _Malformed(f"wire type {kind} of field {number}")
    if pos != len(data):
        raise _Malformed("the last field runs past its message")


def _tensor_name(data: memoryview) -> str:
    name = ""
    for number, value in _fields(data):
        if number == _TENSOR_NAME and value is not None:
            name = bytes(value).decode("utf-8", "replace")
    return name


def _scan(model: memoryview, light: onnx.ModelProto) -> None:
    for number, graph in _fields(model):
        if number != _MODEL_GRAPH or graph is None:
            continue
        for field, value in _fields(graph):
            if value is None:
                continue
            if field == _GRAPH_INPUT:
                light.graph.input.add().ParseFromString(bytes(value))
            elif field == _GRAPH_OUTPUT:
                light.graph.output.add().ParseFromString(bytes(value))
            elif field == _GRAPH_INITIALIZER:
                light.graph.initializer.add(name=_tensor_name(value))


def signature(path: Path) -> onnx.ModelProto:
    """A model holding only ``path``'s graph inputs, outputs and initializer names (no data);
    ``InvalidModelError`` for a file that is not a protobuf message."""
    light = onnx.ModelProto()
    try:
        with path.open("rb") as handle:
            if path.stat().st_size == 0:
                raise _Malformed("the file is empty")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    _scan(view, light)  # its slices of the view are gone when it returns
                finally:
                    view.release()
    except (_Malformed, OSError, ValueError) as exc:
        raise InvalidModelError(f"{path.name} is not a readable ONNX model: {exc}") from None
    except Exception as exc:  # protobuf's DecodeError for a value-info that does not parse
        raise InvalidModelError(f"{path.name} is not a readable ONNX model: {exc}") from None
    return light
