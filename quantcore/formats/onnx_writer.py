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

import dataclasses
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

from quantcore.formats.containers import code_raw_data, storage_type
from quantcore.formats.graph_copy import Replacement, copy_field, rebuild
from quantcore.formats.onnx_reader import (
    OnnxModel,
    TensorSource,
    walk_graphs,
)

# decode()'s own broadcasting, so the graph's constants have exactly its shapes.
from quantcore.quantizers.codes import (
    AffineDecoder,
    BlockDecoder,
    CodebookDecoder,
    Decoder,
    _along,
)

# Protobuf cannot serialize a message of 2 GiB or more; keep a margin for the graph.
MAX_INLINE_BYTES = 2**31 - 2**26
EXTERNAL_SUFFIX = ".data"

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
    opset: int = 0  # the written model's ai.onnx opset
    notes: tuple[str, ...] = ()  # how the containers were chosen, for the report


# 4-bit codes need opset 21 (INT4/UINT4 and Cast from them): an older model whose codes fit
# in 4 bits is converted to it, so that its file shrinks with its bits.
INT4_OPSET = 21


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

        # Constants shared by the decode subgraphs of one graph: (graph path, key) -> name.
        self.shared: dict[tuple[str, bytes], str] = {}
        self._prefixes = itertools.count(1)

    def prefix(self) -> str:
        """``q1``, ``q2``, ...: each decode subgraph's own (its names still go through
        ``fresh``)."""
        return f"q{next(self._prefixes)}"

    def fresh(self, base: str) -> str:
        for i in itertools.count():
            name = base if i == 0 else f"{base}_{i}"
            if name not in self.used:
                self.used.add(name)
                return name
        raise AssertionError("unreachable")


def _decode_nodes(
    names: _Names, source: TensorSource, coded: CodedTensor, opset: int
) -> tuple[Replacement, CodeStorage]:
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
    if isinstance(decoder, BlockDecoder):
        affine = decoder.levels is None and decoder.zero_point is None
    elem = storage_type(coded.code_min, coded.code_max, signed=affine, opset=opset)
    # Short names for the subgraph's initializers and values (``qN.codes``, ``qN.scale``,
    # ``qN.zp``, ``qN.3``), unnamed nodes: on a small model, names derived from the tensor's
    # would weigh a tenth of its codes. The last node's output keeps the tensor's own name.
    prefix = names.prefix()
    code_name = names.fresh(f"{prefix}.codes")
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    step = itertools.count()

    def out(tag: str) -> str:
        return names.fresh(f"{prefix}.{next(step)}")

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        result = out(op.lower())
        nodes.append(helper.make_node(op, inputs, [result], **attrs))
        return result

    def shared_const(tag: str, values: np.ndarray) -> str:
        """An integer constant, shared by every subgraph of this graph that needs the same."""
        key = (source.graph_path, values.tobytes() + str((values.dtype, values.shape)).encode())
        if key not in names.shared:
            names.shared[key] = names.fresh(f"{prefix}.{tag}")
            inits.append(numpy_helper.from_array(values, names.shared[key]))
        return names.shared[key]

    def index_const(array: np.ndarray) -> str:
        return shared_const("index", np.ascontiguousarray(array, np.int32))

    def shape_const(shape: tuple[int, ...]) -> str:
        return shared_const("shape", np.asarray(shape, np.int64))

    def const(tag: str, array: np.ndarray) -> str:
        name = names.fresh(f"{prefix}.{tag}")
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def raw_const(tag: str, array: np.ndarray, elem_type: int) -> str:
        name = names.fresh(f"{prefix}.{tag}")
        tensor = onnx.TensorProto(name=name, data_type=elem_type, dims=array.shape)
        tensor.raw_data = code_raw_data(array, elem_type)
        inits.append(tensor)
        return name

    per_channel = axis is not None and scale.ndim > 0
    if isinstance(decoder, BlockDecoder):
        # Where the blocks tile their axis, the codes are stored with the axis split in two
        # (blocks, block_size) and the scales with a 1 in its place, so that Sub and Mul
        # broadcast each block's numbers over its weights: no index, no Gather. A ragged
        # last block gathers them by a block index instead. Constants only either way,
        # which onnxruntime folds at load. Not DequantizeLinear with block_size: onnxruntime
        # fuses that with a following MatMul into MatMulNBits, which by default computes with
        # int8 activations (about 1% output error here) instead of these weights.
        view, b_axis, size = decoder.view, decoder.axis, decoder.block_size
        length = view[b_axis]
        tiled = length <= size or length % size == 0  # one block (a depthwise 3x3), or whole ones
        per_block = np.shape(decoder.scale)
        codes = codes.reshape(view)  # the same bytes
        if length > size and tiled:
            blocks = length // size
            codes = codes.reshape(*view[:b_axis], blocks, size, *view[b_axis + 1 :])
            per_block = (*view[:b_axis], blocks, 1, *view[b_axis + 1 :])

        def expand(value: str) -> str:
            if tiled:
                return value
            return node("Gather", [value, index_const(decoder.block_index())], axis=b_axis)

        scale16 = np.asarray(decoder.scale, np.float16).reshape(per_block)
        scale32 = node("Cast", [raw_const("scale", scale16, TensorProto.FLOAT16)],
                       to=TensorProto.FLOAT)  # fmt: skip
        if decoder.levels is None:
            current = node("Cast", [code_name], to=TensorProto.FLOAT)
        else:
            cast = node("Cast", [code_name], to=TensorProto.INT32)
            current = node("Gather", [const("levels", decoder.levels), cast], axis=0)
        if decoder.zero_point is not None:  # stored like the codes, cast like them
            stored = raw_const("zp", decoder.zero_point.reshape(per_block), elem)
            zero = expand(node("Cast", [stored], to=TensorProto.FLOAT))
            current = node("Sub", [current, zero])
        current = node("Mul", [current, expand(scale32)])
        if codes.shape != tuple(coded.codes.shape):
            current = node("Reshape", [current, shape_const(coded.codes.shape)])
    elif isinstance(decoder, CodebookDecoder):
        index = node("Cast", [code_name], to=TensorProto.INT32)
        current = node("Gather", [const("levels", decoder.levels), index], axis=0)
        if not np.all(scale == 1.0):
            current = node("Mul", [current, const("scale", _along(scale, axis, ndim))])
    elif (opset >= 13 or (opset >= 10 and not per_channel)):
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
    return Replacement(
        nodes=nodes, initializers=inits, code=(code_name, codes, elem)
    ), CodeStorage(initializer=code_name, elem_type=elem, graph_path=source.graph_path)


def _fits_four_bits(coded: CodedTensor) -> bool:
    return coded.code_max - coded.code_min < 16


def rewrite(
    model: OnnxModel, quantized: Mapping[str, CodedTensor], *, inline_codes: bool = True
) -> WrittenModel:
    """A new ``ModelProto`` with every tensor of ``quantized`` (by ``WeightTensor.name``)
    replaced by its codes and decode subgraph; ``model.proto`` is left unchanged.

    A model below opset 21 whose codes (some of them) fit in 4 bits is first converted to
    opset 21 with onnx's version converter (a copy without the quantized tensors' data, so
    the floats are not held twice), then written as an opset-21 model; where the converter
    refuses the model, the codes stay in 8-bit containers at the model's own opset and a note
    says why."""
    if model.opset >= INT4_OPSET or not any(_fits_four_bits(c) for c in quantized.values()):
        return _rewrite(model, quantized, model.opset, inline_codes)
    try:
        converted = _converted(model, quantized)
    except Exception as exc:
        kept = _rewrite(model, quantized, model.opset, inline_codes)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        note = (f"opset {model.opset} kept: converting to {INT4_OPSET} failed ({reason}); "
                "codes of 4 bits or fewer are stored in 8-bit containers")  # fmt: skip
        return dataclasses.replace(kept, notes=(note,))
    written = _rewrite(converted, quantized, INT4_OPSET, inline_codes)
    note = f"converted from opset {model.opset} to {INT4_OPSET} for 4-bit containers"
    return dataclasses.replace(written, notes=(note,))


def _converted(model: OnnxModel, quantized: Mapping[str, CodedTensor]) -> OnnxModel:
    """``model`` at opset 21, its quantized tensors kept as data-free placeholders (the
    converter needs only their names, types and shapes; the writer replaces them)."""
    from onnx import version_converter

    plans: dict[str, list[tuple[TensorSource, Replacement]]] = defaultdict(list)
    for name in quantized:
        source = model.sources[name]
        t = source.tensor
        empty = onnx.TensorProto(name=source.value_name, data_type=t.data_type, dims=t.dims)
        if source.node is None:
            placeholder = Replacement(nodes=[], initializers=[empty], code=None)
        else:
            node = helper.make_node("Constant", [], [source.value_name], value=empty)
            placeholder = Replacement(nodes=[node], initializers=[], code=None)
        plans[source.graph_path].append((source, placeholder))
    stripped = _copy_model(model, plans)
    proto = version_converter.convert_version(stripped, INT4_OPSET)
    _drop_inferred_shapes(proto, model.proto)
    converted = OnnxModel(model.path, proto)
    missing = set(quantized) - set(converted.sources)
    if missing:
        raise ValueError(f"tensors renamed by the conversion: {sorted(missing)[:3]}")
    return converted


def _drop_inferred_shapes(converted: onnx.ModelProto, source: onnx.ModelProto) -> None:
    """Remove the ``value_info`` the converter's shape inference added (measured: 4-9% of a
    4-bit model's bytes on small real models); the source's own entries stay."""
    kept = {v.name for g, _ in walk_graphs(source.graph, "graph") for v in g.value_info}
    for graph, _ in walk_graphs(converted.graph, "graph"):
        own = [v for v in graph.value_info if v.name in kept]
        if len(own) != len(graph.value_info):
            del graph.value_info[:]
            graph.value_info.extend(own)


def _rewrite(
    model: OnnxModel, quantized: Mapping[str, CodedTensor], opset: int, inline_codes: bool
) -> WrittenModel:
    names = _Names(model.proto)
    plans: dict[str, list[tuple[TensorSource, Replacement]]] = defaultdict(list)
    storages: dict[str, CodeStorage] = {}
    for name, coded in quantized.items():
        source = model.sources[name]
        replacement, storages[name] = _decode_nodes(names, source, coded, opset)
        replacement.inline_codes = inline_codes
        plans[source.graph_path].append((source, replacement))
    return WrittenModel(proto=_copy_model(model, plans), codes=storages, opset=opset)


def _copy_model(
    model: OnnxModel, plans: Mapping[str, list[tuple[TensorSource, Replacement]]]
) -> onnx.ModelProto:
    """A new model: ``model``'s fields, and its graphs with ``plans`` applied."""
    out = onnx.ModelProto()
    for field, value in model.proto.ListFields():
        if field.name != "graph":
            copy_field(out, field, value)
    out.graph.SetInParent()
    rebuild(model.proto.graph, "graph", plans, model.path.parent, out.graph)
    return out


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
