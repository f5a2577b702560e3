"""Writing ``model.onnx``: each quantized tensor replaced by integer codes and a decode subgraph.

For a tensor ``W`` the writer removes the float initializer (or the ``Constant`` node) and
adds, at the start of the graph that held it, nodes whose last output is named ``W``, so
every consumer (several nodes, or nodes in subgraphs) reads the one decoded tensor:

- ``AffineDecoder``: ``DequantizeLinear(codes, scale[, axis])`` then ``Add(offset)``. Codes
  are stored in the narrowest type the opset allows: int4/uint4 from opset 21, else
  int8/uint8; wider codes as int16/uint16 (opset 21) or int16/uint16 with ``Cast`` to int32
  (``DequantizeLinear`` takes int32 from opset 10). Before opset 10 (no ``DequantizeLinear``)
  and for per-channel scales before opset 13 (no ``axis``) the graph is
  ``Cast(float) -> Mul(scale) -> Add(offset)``, the same float32 arithmetic.
- ``CodebookDecoder``: ``Gather(levels, Cast(codes, int32))``, then ``Mul(scale)`` unless every
  scale is 1 and ``Add(offset)`` unless every offset is 0. Indices are uint4 (opset 21) or
  uint8/uint16.
- Tensors stored as float16/bfloat16/float64 end with ``Cast`` back to that type, so
  consumers see their original type; the arithmetic before it is float32, as in ``decode``.

Per-channel ``scale``/``offset`` of ``Mul``/``Add`` are stored already shaped to broadcast
along the decoder's axis. The result is ``decode(codes, decoder)`` bit for bit.

Tensors left in float are copied as they are; those held in external data are read (from
validated paths) and stored inline. ``save_onnx`` writes models over 2 GB with external data.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
from google.protobuf.message import EncodeError
from onnx import TensorProto, helper, numpy_helper

from quantcore.coding.packing import pack_bits
from quantcore.formats.external import is_external
from quantcore.formats.onnx_reader import (
    OnnxModel,
    TensorSource,
    subgraph_path,
    subgraphs,
    tensor_array,
    walk_graphs,
)

# decode()'s own broadcasting, so the graph's constants have exactly its shapes.
from quantcore.quantizers.codes import AffineDecoder, CodebookDecoder, Decoder, _along

# Protobuf cannot serialize a message of 2 GiB or more; keep a margin for the graph.
MAX_INLINE_BYTES = 2**31 - 2**26
EXTERNAL_SUFFIX = ".data"

_FOUR_BIT = frozenset({TensorProto.INT4, TensorProto.UINT4})


class CodedTensor(Protocol):
    """What the writer needs of a quantized tensor (``QuantizedTensor`` provides it)."""

    @property
    def codes(self) -> np.ndarray: ...
    @property
    def code_min(self) -> int: ...
    @property
    def code_max(self) -> int: ...
    @property
    def decoder(self) -> Decoder: ...


@dataclass(frozen=True, kw_only=True)
class CodeStorage:
    """How one tensor's codes are stored in the graph (used again by ``qpack`` to refill them)."""

    initializer: str  # name of the code initializer
    elem_type: int  # ONNX element type of the stored codes
    graph_path: str


@dataclass(frozen=True, kw_only=True)
class WrittenModel:
    proto: onnx.ModelProto
    codes: dict[str, CodeStorage]  # tensor name -> where its codes are


def storage_type(code_min: int, code_max: int, *, signed: bool, opset: int) -> int:
    """The narrowest ONNX integer type for codes in ``[code_min, code_max]`` at ``opset``."""
    four_bit = opset >= 21
    if signed and code_min < 0:
        if four_bit and code_min >= -8 and code_max <= 7:
            return TensorProto.INT4
        if code_min >= -128 and code_max <= 127:
            return TensorProto.INT8
        if code_min >= -32768 and code_max <= 32767:
            return TensorProto.INT16
        return TensorProto.INT32
    if four_bit and code_max <= 15:
        return TensorProto.UINT4
    if code_max <= 255:
        return TensorProto.UINT8
    if code_max <= 65535:
        return TensorProto.UINT16
    return TensorProto.INT32


def code_raw_data(codes: np.ndarray, elem_type: int) -> bytes:
    """The ``raw_data`` bytes of ``codes`` stored as ``elem_type`` (4-bit: two per byte, low
    nibble first, as ONNX requires)."""
    if elem_type in _FOUR_BIT:
        return pack_bits(np.bitwise_and(codes, 0xF).astype(np.uint8), 4)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).newbyteorder("<")
    return np.ascontiguousarray(codes, dtype=dtype).tobytes()


class _Names:
    """Fresh value names that clash with nothing in the model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.used: set[str] = set()
        for graph, _ in walk_graphs(model.graph, "graph"):
            self.used.update(i.name for i in graph.input)
            self.used.update(o.name for o in graph.output)
            self.used.update(i.name for i in graph.initializer)
            self.used.update(v.name for v in graph.value_info)
            for node in graph.node:
                self.used.update(node.input)
                self.used.update(node.output)
                self.used.add(node.name)

    def fresh(self, base: str) -> str:
        for i in itertools.count():
            name = base if i == 0 else f"{base}_{i}"
            if name not in self.used:
                self.used.add(name)
                return name
        raise AssertionError("unreachable")


@dataclass
class _Replacement:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    # The code tensor is written straight into the output graph (name, codes, element type):
    # building it apart and copying it in would hold the codes twice.
    code: tuple[str, np.ndarray, int]


def _decode_nodes(
    names: _Names, source: TensorSource, coded: CodedTensor, opset: int
) -> tuple[_Replacement, CodeStorage]:
    """Initializers and nodes that compute ``decode(coded.codes, coded.decoder)`` under the
    source tensor's own name and type."""
    value, out_type = source.value_name, source.tensor.data_type
    decoder = coded.decoder
    codes = np.asarray(coded.codes)
    ndim = codes.ndim
    axis = None if decoder.axis is None else decoder.axis % max(ndim, 1)
    scale = np.asarray(decoder.scale, np.float32)
    offset = np.asarray(decoder.offset, np.float32)
    affine = isinstance(decoder, AffineDecoder)
    elem = storage_type(coded.code_min, coded.code_max, signed=affine, opset=opset)
    code_name = names.fresh(f"{value}_codes")
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    step = itertools.count()

    def out(tag: str) -> str:
        return names.fresh(f"{value}_{tag}{next(step)}")

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        result = out(op.lower())
        nodes.append(helper.make_node(op, inputs, [result], name=names.fresh(result), **attrs))
        return result

    def const(tag: str, array: np.ndarray) -> str:
        name = names.fresh(f"{value}_{tag}")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    per_channel = axis is not None and scale.ndim > 0
    if isinstance(decoder, CodebookDecoder):
        index = node("Cast", [code_name], to=TensorProto.INT32)
        current = node("Gather", [const("levels", decoder.levels), index], axis=0)
        if not np.all(scale == 1.0):
            current = node("Mul", [current, const("scale", _along(scale, axis, ndim))])
    elif opset >= 13 or (opset >= 10 and not per_channel):
        current = code_name
        if elem in (TensorProto.INT16, TensorProto.UINT16) and opset < 21:
            current = node("Cast", [current], to=TensorProto.INT32)
        attrs = {"axis": axis} if per_channel else {}
        scale_arr = scale if per_channel else scale.reshape(())
        current = node("DequantizeLinear", [current, const("scale", scale_arr)], **attrs)
    else:
        current = node("Cast", [code_name], to=TensorProto.FLOAT)
        current = node("Mul", [current, const("scale", _along(scale, axis, ndim))])
    if not np.all(offset == 0.0):
        current = node("Add", [current, const("offset", _along(offset, axis, ndim))])
    if out_type != TensorProto.FLOAT:
        current = node("Cast", [current], to=out_type)
    # The last node's output takes the tensor's own name, so consumers are untouched.
    nodes[-1].output[0] = value
    return _Replacement(
        nodes=nodes, initializers=inits, code=(code_name, codes, elem)
    ), CodeStorage(initializer=code_name, elem_type=elem, graph_path=source.graph_path)


def _add_codes(graph: onnx.GraphProto, name: str, codes: np.ndarray, elem_type: int) -> None:
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = elem_type
    tensor.dims.extend(codes.shape)
    tensor.raw_data = code_raw_data(codes, elem_type)


def rewrite(model: OnnxModel, quantized: Mapping[str, CodedTensor]) -> WrittenModel:
    """A new ``ModelProto`` with every tensor of ``quantized`` (by ``WeightTensor.name``)
    replaced by its codes and decode subgraph; ``model.proto`` is left unchanged."""
    names = _Names(model.proto)
    plans: dict[str, list[tuple[TensorSource, _Replacement]]] = defaultdict(list)
    storages: dict[str, CodeStorage] = {}
    for name, coded in quantized.items():
        source = model.sources[name]
        replacement, storages[name] = _decode_nodes(names, source, coded, model.opset)
        plans[source.graph_path].append((source, replacement))
    out = onnx.ModelProto()
    for field, value in model.proto.ListFields():
        if field.name != "graph":
            _copy_field(out, field, value)
    out.graph.SetInParent()
    _rebuild(model.proto.graph, "graph", plans, model.path.parent, out.graph)
    return WrittenModel(proto=out, codes=storages)


def _copy_field(out: object, field: object, value: object) -> None:
    name = field.name  # type: ignore[attr-defined]
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf before 5.28
        repeated = field.label == field.LABEL_REPEATED  # type: ignore[attr-defined]
    if repeated:
        getattr(out, name).extend(value)
    elif field.type == field.TYPE_MESSAGE:  # type: ignore[attr-defined]
        getattr(out, name).CopyFrom(value)
    else:
        setattr(out, name, value)


def _rebuild(
    graph: onnx.GraphProto,
    path: str,
    plans: Mapping[str, list[tuple[TensorSource, _Replacement]]],
    base_dir: Path,
    out: onnx.GraphProto,
) -> None:
    """Fill the empty ``out`` with a copy of ``graph`` with this path's replacements applied,
    recursing into subgraphs, without ever copying the data of a replaced tensor. ``out`` is
    the graph's place in the new model, so nothing is built apart and copied in again."""
    plan = plans.get(path, [])
    dropped_inits = {s.value_name for s, _ in plan if s.node is None}
    dropped_consts = {s.value_name for s, _ in plan if s.node is not None}
    for field, value in graph.ListFields():
        if field.name not in ("node", "initializer", "input"):
            _copy_field(out, field, value)
    # An initializer that is also listed as an input (IR < 4 style) stops being an input.
    out.input.extend(i for i in graph.input if i.name not in dropped_inits)
    for init in graph.initializer:
        if init.name in dropped_inits:
            continue
        if is_external(init):
            out.initializer.append(_inline(init, base_dir))
        else:
            out.initializer.add().CopyFrom(init)
    for _, replacement in plan:
        _add_codes(out, *replacement.code)
        out.initializer.extend(replacement.initializers)
        out.node.extend(replacement.nodes)
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output and node.output[0] in dropped_consts:
            continue
        if not any(subgraphs(a) for a in node.attribute):
            out.node.add().CopyFrom(node)
            continue
        copy = out.node.add()
        for field, value in node.ListFields():
            if field.name != "attribute":
                _copy_field(copy, field, value)
        for attr in node.attribute:
            new_attr = copy.attribute.add()
            subs = subgraphs(attr)
            if not subs:
                new_attr.CopyFrom(attr)
                continue
            for field, value in attr.ListFields():
                if field.name not in ("g", "graphs"):
                    _copy_field(new_attr, field, value)
            one = attr.type == onnx.AttributeProto.GRAPH
            for i, sub in enumerate(subs):
                target = new_attr.g if one else new_attr.graphs.add()
                target.SetInParent()  # present even if the subgraph is empty, as copied
                _rebuild(sub, subgraph_path(path, index, node, attr, i), plans, base_dir, target)


def _inline(tensor: onnx.TensorProto, base_dir: Path) -> onnx.TensorProto:
    array = tensor_array(tensor, base_dir)
    inline = numpy_helper.from_array(np.ascontiguousarray(array), tensor.name)
    inline.data_type = tensor.data_type
    return inline


def serialize(proto: onnx.ModelProto) -> bytes:
    """The bytes of ``model.onnx`` for a model under ``MAX_INLINE_BYTES``."""
    return proto.SerializeToString()


def serialize_inline(proto: onnx.ModelProto) -> bytes | None:
    """``serialize(proto)``, or None for a model of ``MAX_INLINE_BYTES`` or more (to be saved
    with external data). One encoding: protobuf's ``ByteSize`` encodes the whole message too."""
    try:
        data = serialize(proto)
    except (EncodeError, ValueError):  # past protobuf's 2 GiB limit
        return None
    return data if len(data) < MAX_INLINE_BYTES else None


def save_onnx(proto: onnx.ModelProto, path: Path, data: bytes | None = None) -> tuple[Path, ...]:
    """Write ``proto`` (or its already serialized ``data``) to ``path``; past
    ``MAX_INLINE_BYTES``, tensors of 1 KiB or more go to ``<path>.data`` next to it (this moves
    them out of ``proto``). Returns the files written."""
    data = data if data is not None else serialize_inline(proto)
    if data is not None:
        path.write_bytes(data)
        return (path,)
    external = path.with_name(path.name + EXTERNAL_SUFFIX)
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=external.name,
        size_threshold=1024,
    )
    return (path, external)
