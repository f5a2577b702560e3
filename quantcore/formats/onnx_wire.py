"""Where named initializers' ``raw_data`` lie in a serialized ``model.onnx``, read from the
protobuf wire format without parsing the model.

A package keeps ``model.onnx`` as its bytes with the code tensors' ``raw_data`` cut out
(``quantcore.formats.qpack``); unpacking decodes each tensor straight into its place. This
module finds those places: it walks ``ModelProto.graph`` (and every subgraph of a node's
``GRAPH``/``GRAPHS`` attribute, as ``onnx_reader.walk_graphs`` does), steps over every other
field by its length, and reads each initializer's name and ``raw_data`` position.

``skeleton`` goes the other way, for reading a model: the same bytes with the main graph's
large ``raw_data`` fields replaced by external-data references to where those bytes already
are, so that parsing copies none of the weights (they are mapped from the file instead).

Field numbers (onnx.proto): ModelProto.graph 7; GraphProto.node 1, .initializer 5;
NodeProto.attribute 5; AttributeProto.g 6, .graphs 11; TensorProto.name 8, .raw_data 9,
.external_data 13, .data_location 14; StringStringEntryProto.key 1, .value 2.
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
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


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


def _spans(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """``(field number, wire type, start of its tag, start of its payload, end)`` of each
    field of the message in ``[start, end)``."""
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = _varint(data, pos, end)
        kind = tag & 7
        payload = pos
        if kind == _VARINT:
            _, pos = _varint(data, pos, end)
        elif kind == _FIXED64:
            pos += 8
        elif kind == _FIXED32:
            pos += 4
        elif kind == _LEN:
            length, payload = _varint(data, pos, end)
            pos = payload + length
        else:
            break
        if pos > end:
            break
        yield tag >> 3, kind, field_start, payload, pos
    if pos != end:
        raise InvalidModelError("model.onnx bytes are not a valid protobuf message")


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, start, end)`` of each length-delimited field of the message in
    ``[start, end)``; other fields are stepped over."""
    for field, kind, _, payload, field_end in _spans(data, start, end):
        if kind == _LEN:
            yield field, payload, field_end


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


def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_tag(field: int) -> bytes:
    """The tag of length-delimited field ``field``."""
    return encode_varint(field << 3 | _LEN)


def _len_field(field: int, payload: bytes) -> bytes:
    return length_tag(field) + encode_varint(len(payload)) + payload


def _external_reference(location: str, offset: int, length: int) -> bytes:
    """A tensor's ``external_data`` entries and ``data_location`` naming those bytes."""
    entries = b"".join(
        _len_field(_TENSOR_EXTERNAL_DATA,
                   _len_field(1, key.encode()) + _len_field(2, value.encode("utf-8")))
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(length)))
    )  # fmt: skip
    return entries + encode_varint(_TENSOR_DATA_LOCATION << 3 | _VARINT) + bytes([_EXTERNAL])


def _tensor_without_data(
    data: memoryview, start: int, end: int, min_bytes: int, location: str
) -> list[memoryview | bytes] | None:
    """The initializer in ``[start, end)`` with its ``raw_data`` replaced by a reference to
    it, or None to keep it as it is: under ``min_bytes``, or stored in any other way
    (external already, or ``raw_data`` given twice, which a parse would merge)."""
    raw: tuple[int, int, int] | None = None
    for field, _, field_start, payload, field_end in _spans(data, start, end):
        if field in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            return None
        if field == _TENSOR_RAW_DATA:
            if raw is not None:
                return None
            raw = (field_start, payload, field_end)
    if raw is None or raw[2] - raw[1] < min_bytes:
        return None
    field_start, payload, field_end = raw
    reference = _external_reference(location, payload, field_end - payload)
    return [data[start:field_start], data[field_end:end], reference]


def skeleton(
    model: bytes | bytearray | memoryview, min_bytes: int, location: str
) -> tuple[bytes, int] | None:
    """``model`` with the ``raw_data`` of every initializer of its main graph of at least
    ``min_bytes`` replaced by an external reference (``location``, and the bytes' offset and
    length in ``model``), and how many were replaced; None if none is. Subgraphs' and
    ``Constant`` nodes' tensors keep their bytes. Raises ``InvalidModelError`` where the
    bytes are not a protobuf message."""
    data = memoryview(model).cast("B")
    pieces: list[memoryview | bytes] = []
    copied = replaced = 0
    for field, kind, field_start, graph_start, graph_end in _spans(data, 0, len(data)):
        if field != _MODEL_GRAPH or kind != _LEN:
            continue  # a graph of another wire type: the whole parse says what is wrong
        graph: list[memoryview | bytes] = []
        graph_copied = graph_start
        for g_field, g_kind, init_start, payload, init_end in _spans(data, graph_start,
                                                                     graph_end):
            if g_field != _GRAPH_INITIALIZER or g_kind != _LEN:
                continue
            tensor = _tensor_without_data(data, payload, init_end, min_bytes, location)
            if tensor is None:
                continue
            graph.append(data[graph_copied:init_start])
            graph.append(length_tag(_GRAPH_INITIALIZER))
            graph.append(encode_varint(sum(len(p) for p in tensor)))
            graph.extend(tensor)
            graph_copied = init_end
            replaced += 1
        if graph_copied == graph_start:
            continue
        graph.append(data[graph_copied:graph_end])
        pieces.append(data[copied:field_start])
        pieces.append(length_tag(_MODEL_GRAPH))
        pieces.append(encode_varint(sum(len(p) for p in graph)))
        pieces.extend(graph)
        copied = graph_end
    if not replaced:
        return None
    pieces.append(data[copied:])
    return b"".join(pieces), replaced
