"""Where named initializers' ``raw_data`` lie in a serialized ``model.onnx``, read from the
protobuf wire format without parsing the model.

A package keeps ``model.onnx`` as its bytes with the code tensors' ``raw_data`` cut out
(``quantcore.formats.qpack``); unpacking decodes each tensor straight into its place. This
module finds those places: it walks ``ModelProto.graph`` (and every subgraph of a node's
``GRAPH``/``GRAPHS`` attribute, as ``onnx_reader.walk_graphs`` does), steps over every other
field by its length, and reads each initializer's name and ``raw_data`` position.

Field numbers (onnx.proto): ModelProto.graph 7; GraphProto.node 1, .initializer 5;
NodeProto.attribute 5; AttributeProto.g 6, .graphs 11; TensorProto.name 8, .raw_data 9.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from quantcore.errors import InvalidModelError

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_ATTRIBUTE = 5
_ATTR_G, _ATTR_GRAPHS = 6, 11
_TENSOR_NAME, _TENSOR_RAW_DATA = 8, 9


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise InvalidModelError("model.onnx bytes are not a valid protobuf message (a varint)")


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, start, end)`` of each length-delimited field of the message in
    ``[start, end)``; other fields are stepped over."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos, end)
        kind = tag & 7
        if kind == _VARINT:
            _, pos = _varint(data, pos, end)
        elif kind == _FIXED64:
            pos += 8
        elif kind == _FIXED32:
            pos += 4
        elif kind == _LEN:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                break
            yield tag >> 3, pos, pos + length
            pos += length
        else:
            break
    if pos != end:
        raise InvalidModelError("model.onnx bytes are not a valid protobuf message")


def _graphs(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The graph in ``[start, end)`` and every subgraph below it."""
    yield start, end
    for field, node_start, node_end in _fields(data, start, end):
        if field != _GRAPH_NODE:
            continue
        for attr_field, attr_start, attr_end in _fields(data, node_start, node_end):
            if attr_field != _NODE_ATTRIBUTE:
                continue
            for sub_field, sub_start, sub_end in _fields(data, attr_start, attr_end):
                if sub_field in (_ATTR_G, _ATTR_GRAPHS):
                    yield from _graphs(data, sub_start, sub_end)


def raw_data_regions(
    model: bytes | bytearray | memoryview, names: Collection[str]
) -> dict[str, tuple[int, int]]:
    """For each initializer in ``names``, where its ``raw_data`` bytes are in the serialized
    ``model``: ``(offset, length)`` (length 0 at the tensor's end if it has no ``raw_data``).
    Raises ``InvalidModelError`` if one is missing or appears twice."""
    data = memoryview(model).cast("B")
    wanted = set(names)
    found: dict[str, tuple[int, int]] = {}
    for field, start, end in _fields(data, 0, len(data)):
        if field != _MODEL_GRAPH:
            continue
        for graph_start, graph_end in _graphs(data, start, end):
            for init_field, init_start, init_end in _fields(data, graph_start, graph_end):
                if init_field != _GRAPH_INITIALIZER:
                    continue
                name, raw = None, (init_end, 0)  # no field: no bytes (an empty tensor)
                for t_field, t_start, t_end in _fields(data, init_start, init_end):
                    if t_field == _TENSOR_NAME:
                        name = bytes(data[t_start:t_end]).decode("utf-8", "replace")
                    elif t_field == _TENSOR_RAW_DATA:
                        raw = (t_start, t_end - t_start)
                if name in wanted:
                    if name in found:
                        raise InvalidModelError(f"initializer {name!r} appears twice")
                    found[name] = raw
    missing = wanted - found.keys()
    if missing:
        raise InvalidModelError(f"initializers not found in model.onnx: {sorted(missing)[:5]}")
    return found
