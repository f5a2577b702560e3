"""Writing ``model.onnx``: each quantized tensor replaced by integer codes and a decode subgraph.

For a tensor ``W`` the writer removes the float initializer (or the ``Constant`` node) and
adds, at the start of the graph that held it, the nodes of ``decode_graph.decode_nodes``, whose
last output is named ``W``, so every consumer (several nodes, or nodes in subgraphs) reads the
one decoded tensor; each tensor's nodes become one call of a model-local function
(``decode_functions``). The result is ``decode(codes, decoder)`` bit for bit.

Tensors left in float are copied as they are; those held in external data are read (from
validated paths) and stored inline. ``save_onnx`` writes models over 2 GB with external data.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError
from onnx import helper

from quantcore.formats.decode_functions import DecodeFunctions
from quantcore.formats.decode_graph import CodedTensor, CodeStorage, Names, decode_nodes
from quantcore.formats.graph_copy import Replacement, copy_field, rebuild
from quantcore.formats.onnx_reader import OnnxModel, TensorSource, walk_graphs

__all__ = ["CodeStorage", "CodedTensor", "WrittenModel", "rewrite", "save_onnx", "serialize"]

# Protobuf cannot serialize a message of 2 GiB or more; keep a margin for the graph.
MAX_INLINE_BYTES = 2**31 - 2**26
EXTERNAL_SUFFIX = ".data"

@dataclass(frozen=True, kw_only=True)
class WrittenModel:
    proto: onnx.ModelProto
    codes: dict[str, CodeStorage]  # tensor name -> where its codes are
    opset: int = 0  # the written model's ai.onnx opset
    notes: tuple[str, ...] = ()  # how the containers were chosen, for the report


# 4-bit codes need opset 21 (INT4/UINT4 and Cast from them): an older model whose codes fit
# in 4 bits is converted to it, so that its file shrinks with its bits.
INT4_OPSET = 21


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
    names = Names(model.proto)
    functions = DecodeFunctions(model.proto, opset)
    plans: dict[str, list[tuple[TensorSource, Replacement]]] = defaultdict(list)
    storages: dict[str, CodeStorage] = {}
    for name, coded in quantized.items():
        source = model.sources[name]
        replacement, storages[name] = decode_nodes(names, source, coded, opset)
        replacement.nodes = functions.call(replacement.nodes)
        replacement.inline_codes = inline_codes
        plans[source.graph_path].append((source, replacement))
    proto = _copy_model(model, plans)
    functions.add_to(proto)
    return WrittenModel(proto=proto, codes=storages, opset=opset)


def _copy_model(
    model: OnnxModel, plans: Mapping[str, list[tuple[TensorSource, Replacement]]]
) -> onnx.ModelProto:
    """A new model: ``model``'s fields, and its graphs with ``plans`` applied."""
    out = onnx.ModelProto()
    for field, value in model.proto.ListFields():
        if field.name != "graph":
            copy_field(out, field, value)
    out.graph.SetInParent()
    rebuild(model.proto.graph, "graph", plans, model.stored_bytes, out.graph)
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
