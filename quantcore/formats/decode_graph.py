"""One quantized tensor's decode subgraph: the initializers and nodes that compute
``decode(codes, decoder)`` under the tensor's own name, for ``onnx_writer`` to put in place of
its float data.

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

Granularity ``group`` (``BlockDecoder``): Cast of the codes, of the float16 scales and of the
zero points, Sub and Mul, with the scales broadcast over their blocks (``decode_nodes`` says
how), and a Reshape back where the codes are stored in another shape.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantcore.formats.containers import code_raw_data, storage_type
from quantcore.formats.graph_copy import Replacement
from quantcore.formats.onnx_reader import TensorSource, walk_graphs

# decode()'s own broadcasting, so the graph's constants have exactly its shapes.
from quantcore.quantizers.codes import (
    AffineDecoder,
    BlockDecoder,
    CodebookDecoder,
    Decoder,
    _along,
)


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


class Names:
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


def decode_nodes(
    names: Names, source: TensorSource, coded: CodedTensor, opset: int
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
    # Short names for the subgraph's initializers and values (``qN.c`` codes, ``qN.s`` scale,
    # ``qN.z`` zero point, ``qN.l`` levels, ``qN.o`` offset, ``qN.3``; the decode function's
    # parameters spell the roles out), unnamed nodes: on a small model, names derived from the
    # tensor's would weigh a tenth of its codes. The last node's output keeps the tensor's name.
    prefix = names.prefix()
    code_name = names.fresh(f"{prefix}.c")
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

    def scalar(value: int) -> str:
        return shared_const("n", np.asarray(value, np.int32))

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
        # broadcast each block's numbers over its weights: no index, no Gather; where one
        # block holds the whole axis, in the weight's own shape (no Reshape back). A ragged
        # last block gathers them by a block index the graph computes. Constants only
        # either way, which onnxruntime folds at load. Not DequantizeLinear with block_size:
        # onnxruntime fuses that with a following MatMul into MatMulNBits, which by default
        # computes with int8 activations (about 1% output error here) instead of these
        # weights.
        view, b_axis, size = decoder.view, decoder.axis, decoder.block_size
        length = view[b_axis]
        tiled = length <= size or length % size == 0  # one block (a depthwise 3x3), or whole ones
        per_block = np.shape(decoder.scale)
        codes = codes.reshape(view)  # the same bytes
        own = _one_block_shape(tuple(coded.codes.shape), view, b_axis)
        if length > size and tiled:
            blocks = length // size
            codes = codes.reshape(*view[:b_axis], blocks, size, *view[b_axis + 1 :])
            per_block = (*view[:b_axis], blocks, 1, *view[b_axis + 1 :])
        elif length <= size and own is not None:  # one block: no Reshape back
            codes, per_block = codes.reshape(coded.codes.shape), own

        block_of: list[str] = []  # each position's block, made once: Range(0, length) / size

        def expand(value: str) -> str:
            if tiled:
                return value
            if not block_of:
                positions = node("Range", [scalar(0), scalar(length), scalar(1)])
                block_of.append(node("Div", [positions, scalar(size)]))
            return node("Gather", [value, block_of[0]], axis=b_axis)

        scale16 = np.asarray(decoder.scale, np.float16).reshape(per_block)
        scale32 = node("Cast", [raw_const("s", scale16, TensorProto.FLOAT16)],
                       to=TensorProto.FLOAT)  # fmt: skip
        if decoder.levels is None:
            current = node("Cast", [code_name], to=TensorProto.FLOAT)
        else:
            cast = node("Cast", [code_name], to=TensorProto.INT32)
            current = node("Gather", [const("l", decoder.levels), cast], axis=0)
        if decoder.zero_point is not None:  # stored like the codes, cast like them
            stored = raw_const("z", decoder.zero_point.reshape(per_block), elem)
            zero = expand(node("Cast", [stored], to=TensorProto.FLOAT))
            current = node("Sub", [current, zero])
        current = node("Mul", [current, expand(scale32)])
        if codes.shape != tuple(coded.codes.shape):
            current = node("Reshape", [current, shape_const(coded.codes.shape)])
    elif isinstance(decoder, CodebookDecoder):
        index = node("Cast", [code_name], to=TensorProto.INT32)
        current = node("Gather", [const("l", decoder.levels), index], axis=0)
        if not np.all(scale == 1.0):
            current = node("Mul", [current, const("s", _along(scale, axis, ndim))])
    elif (opset >= 13 or (opset >= 10 and not per_channel)):
        current = code_name
        if elem in (TensorProto.INT16, TensorProto.UINT16) and opset < 21:
            current = node("Cast", [current], to=TensorProto.INT32)
        attrs = {"axis": axis} if per_channel else {}
        scale_arr = scale if per_channel else scale.reshape(())
        current = node("DequantizeLinear", [current, const("s", scale_arr)], **attrs)
    else:
        current = node("Cast", [code_name], to=TensorProto.FLOAT)
        current = node("Mul", [current, const("s", _along(scale, axis, ndim))])
    if not np.all(offset == 0.0):
        current = node("Add", [current, const("o", _along(offset, axis, ndim))])
    if out_type != TensorProto.FLOAT:
        current = node("Cast", [current], to=out_type)
    # The last node's output takes the tensor's own name, so consumers are untouched.
    nodes[-1].output[0] = value
    return Replacement(
        nodes=nodes, initializers=inits, code=(code_name, codes, elem)
    ), CodeStorage(initializer=code_name, elem_type=elem, graph_path=source.graph_path)


def _one_block_shape(
    shape: tuple[int, ...], view: tuple[int, ...], axis: int
) -> tuple[int, ...] | None:
    """Where the view's ``axis`` is a run of ``shape``'s own dims (Conv's input channels and
    kernel, say), the shape in those dims of numbers that are one per block of a block that
    holds the whole axis: the run's dims set to 1. None where the view regroups otherwise."""
    before, after = math.prod(view[:axis]), math.prod(view[axis + 1 :])
    for i in range(len(shape) + 1):
        if math.prod(shape[:i]) != before:
            continue
        for j in range(i, len(shape) + 1):
            if math.prod(shape[j:]) == after and math.prod(shape[i:j]) == view[axis]:
                return (*shape[:i], *(1,) * (j - i), *shape[j:])
    return None
