"""The first layers of an ONNX model: the weights whose operator reads the model's input.

A first layer sees the raw input (pixels, audio samples, features) before any other weight
has shaped it, and every later layer sees its error: measured on real models, the costliest
tensor at 8 bits of an audio model is the fixed Fourier basis its first convolution applies
to the samples (its error leaks the loud low bands into the quiet high ones, and a log of the
magnitudes then amplifies it). These tensors are usually small, so granularity ``auto`` gives
them finer groups (``quantcore.compress.auto_plan``).

A value is *raw* when it is computed from the model's inputs (and constants) without any
selected weight: a graph input, or the output of an operator whose inputs are raw or constant
and which reads no weight (a Pad, a normalisation, a mask's arithmetic). The first layers are
the weights read by an operator that also reads a raw value. Weights pass through the
operators that only compute on them (a ``Transpose`` of a weight stays that weight);
metadata (``Shape``, ``Size``) and indicators (comparisons, ``OneHot``: a one-hot byte
encoding) do not carry the input's values, so a layer reading them is a lookup; subgraphs
read outer values by name, and a node with subgraphs passes its inputs to theirs and their
outputs to its own.
A recurrent operator's state inputs are not its data: only its sequence input counts; a table
lookup (``Gather``) is no first layer: its input is indices, which pick rows and scale nothing.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx

from quantcore.formats.onnx_reader import subgraphs, walk_graphs

# Operators whose outputs do not carry the input's values: metadata (Shape, Size) and
# indicators (comparisons, OneHot: 0 or 1 whatever the input's range).
RANGELESS_OPS = frozenset({
    "Shape", "Size", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And",
    "Or", "Xor", "IsNaN", "IsInf", "OneHot",
})
# A table lookup's input is indices: it picks rows, multiplies nothing, amplifies no error.
LOOKUP_OPS = frozenset({"Gather", "GatherElements", "GatherND"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    names = node.input[:1] if node.op_type in RECURRENT_OPS else node.input
    return [n for n in names if n]


def input_layers(proto: onnx.ModelProto, weights: Collection[str]) -> frozenset[str]:
    """The names of ``weights`` that an operator reading a raw value consumes (module
    docstring)."""
    selected = set(weights)
    stored = {t.name for g, _ in walk_graphs(proto.graph, "graph") for t in g.initializer}
    reached = {i.name for i in proto.graph.input if i.name not in stored}  # depends on input
    processed: set[str] = set()  # depends on a selected weight
    origins: dict[str, set[str]] = {name: {name} for name in selected}
    nodes = [node for graph, _ in walk_graphs(proto.graph, "graph") for node in graph.node]

    def grow(target: set[str], names: set[str]) -> bool:
        new = names - target
        target |= new
        return bool(new)

    changed = True
    while changed:  # nodes are topologically ordered within a graph: a few passes settle it
        changed = False
        for node in nodes:
            inner = [sub for attr in node.attribute for sub in subgraphs(attr)]
            read = [n for n in node.input if n]
            carried = set().union(*(origins.get(n, set()) for n in read))
            inner_out = {o.name for sub in inner for o in sub.output}
            outputs = {o for o in node.output if o} | {i.name for sub in inner for i in sub.input}
            is_reached = node.op_type not in RANGELESS_OPS and (
                any(n in reached for n in read) or bool(inner_out & reached))
            if is_reached:
                changed |= grow(reached, outputs)
            if carried or any(n in processed for n in read) or inner_out & processed:
                if is_reached or any(n in processed for n in read) or inner_out & processed:
                    changed |= grow(processed, outputs)
                else:  # weights and constants only: the outputs are still those weights
                    for out in outputs:
                        changed |= grow(origins.setdefault(out, set()), carried)
    found: set[str] = set()
    for node in nodes:
        if node.op_type in LOOKUP_OPS:
            continue
        if any(n in reached and n not in processed for n in _data_inputs(node)):
            found |= set().union(*(origins.get(n, set()) for n in node.input if n))
    return frozenset(found & selected)
