"""Copying a model's graphs with replacements applied, without copying replaced tensors' data.

``rebuild`` fills an empty graph (already in its place in the new model, so nothing is built
apart and copied in again) with a copy of a source graph in which the tensors a plan replaces
are dropped and their decode subgraphs added, recursing into subgraphs (If, Loop, Scan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from quantcore.formats.containers import code_raw_data
from quantcore.formats.external import is_external, set_raw_data
from quantcore.formats.onnx_reader import TensorSource, subgraph_path, subgraphs

# The bytes of an external tensor (or one read in place from the model file), as ``raw_data``.
StoredBytes = Callable[[onnx.TensorProto], np.ndarray]


@dataclass
class Replacement:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    # The code tensor is written straight into the output graph (name, codes, element type):
    # building it apart and copying it in would hold the codes twice. None: no codes.
    code: tuple[str, np.ndarray, int] | None
    # False: the code tensor gets its name, type and shape but no data (a skeleton, whose
    # codes a streaming writer fills in as it writes the file).
    inline_codes: bool = True


def add_codes(
    graph: onnx.GraphProto, name: str, codes: np.ndarray, elem_type: int, inline: bool = True
) -> None:
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = elem_type
    tensor.dims.extend(codes.shape)
    if inline:
        tensor.raw_data = code_raw_data(codes, elem_type)


def copy_field(out: object, field: object, value: object) -> None:
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


def rebuild(
    graph: onnx.GraphProto,
    path: str,
    plans: Mapping[str, list[tuple[TensorSource, Replacement]]],
    stored_bytes: StoredBytes,
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
            copy_field(out, field, value)
    # An initializer that is also listed as an input (IR < 4 style) stops being an input.
    out.input.extend(i for i in graph.input if i.name not in dropped_inits)
    for init in graph.initializer:
        if init.name in dropped_inits:
            continue
        if is_external(init):
            out.initializer.append(_inline(init, stored_bytes(init)))
        else:
            out.initializer.add().CopyFrom(init)
    for _, replacement in plan:
        if replacement.code is not None:
            add_codes(out, *replacement.code, inline=replacement.inline_codes)
        out.initializer.extend(replacement.initializers)
        out.node.extend(replacement.nodes)
        # Copied in: a plan is applied once, so its copies (scales, codebooks) can go now.
        replacement.initializers.clear()
        replacement.nodes.clear()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output and node.output[0] in dropped_consts:
            continue
        if not any(subgraphs(a) for a in node.attribute):
            out.node.add().CopyFrom(node)
            continue
        copy = out.node.add()
        for field, value in node.ListFields():
            if field.name != "attribute":
                copy_field(copy, field, value)
        for attr in node.attribute:
            new_attr = copy.attribute.add()
            subs = subgraphs(attr)
            if not subs:
                new_attr.CopyFrom(attr)
                continue
            for field, value in attr.ListFields():
                if field.name not in ("g", "graphs"):
                    copy_field(new_attr, field, value)
            one = attr.type == onnx.AttributeProto.GRAPH
            for i, sub in enumerate(subs):
                target = new_attr.g if one else new_attr.graphs.add()
                target.SetInParent()  # present even if the subgraph is empty, as copied
                rebuild(
                    sub, subgraph_path(path, index, node, attr, i), plans, stored_bytes, target
                )


def _inline(tensor: onnx.TensorProto, stored: np.ndarray) -> onnx.TensorProto:
    """``tensor`` with its bytes in ``raw_data`` in place of its external reference (every
    other field kept)."""
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    set_raw_data(inline, stored.tobytes())
    return inline
