"""Bias correction in the written model: each calibrated layer's output shifted per channel.

``shift_outputs`` takes, for a weight's value name, the shift of its layer's output per
output channel, and writes it where onnxruntime applies it with no extra work where it can:

- ``Conv`` with a bias initializer of the main graph used by that node alone: the bias is
  shifted; a ``Conv`` without bias gets one (its third input);
- ``Gemm`` whose ``C`` is such an initializer of shape ``(N,)`` or ``(1, N)``: ``C`` is
  shifted by ``shift / beta``; a ``Gemm`` without ``C`` (opset 11 and later) gets one;
- anything else (``MatMul``, a bias in a ``Constant`` node or shared): the node's output is
  renamed and an ``Add`` of the shift, broadcast along the channel axis, writes the original
  name (onnxruntime fuses ``Conv``/``MatMul`` + ``Add``).

Shifts are stored in the bias's (or the weight's) float type.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantcore.formats.onnx_reader import default_opset


def _fresh(used: set[str], base: str) -> str:
    name, i = base, 0
    while name in used:
        i += 1
        name = f"{base}_{i}"
    used.add(name)
    return name


def shift_outputs(proto: onnx.ModelProto, shifts: Mapping[str, np.ndarray]) -> list[str]:
    """Apply ``shifts`` to ``proto`` in place: weight value name -> the per-channel shift, in
    the weight's float type and shaped to broadcast on the layer's output (``(O, 1, 1)`` for
    a 2-D Conv, ``(N,)`` for MatMul/Gemm). Returns one line per layer saying how."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    uses = Counter(v for node in graph.node for v in node.input)
    used = {v for node in graph.node for v in (*node.input, *node.output)} | set(inits)
    opset = default_opset(proto)
    done: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        new_nodes.append(node)
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.op_type not in ("Conv", "Gemm", "MatMul") or weight not in shifts:
            continue
        shaped = np.asarray(shifts[weight])
        shift = shaped.astype(np.float64).reshape(-1)
        dtype = shaped.dtype
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        beta = next((a.f for a in node.attribute if a.name == "beta"), 1.0)
        if bias in inits and uses[bias] == 1 and node.op_type in ("Conv", "Gemm") and (
            node.op_type == "Conv" or (beta != 0 and tuple(inits[bias].dims) in
                                       ((shift.size,), (1, shift.size)))):  # fmt: skip
            tensor = inits[bias]
            old = numpy_helper.to_array(tensor)
            step = shift if node.op_type == "Conv" else shift / beta
            tensor.CopyFrom(numpy_helper.from_array(
                (old.astype(np.float64) + step.reshape(old.shape)).astype(old.dtype), bias))
            done.append(f"{weight}: bias {bias} shifted")
            continue
        if not bias and (node.op_type == "Conv" or (node.op_type == "Gemm" and opset >= 11)):
            name = _fresh(used, f"{weight}_bias")
            step = shift if node.op_type == "Conv" else shift / beta
            graph.initializer.append(numpy_helper.from_array(step.astype(dtype), name))
            if node.op_type == "Gemm":
                while len(node.input) < 2:
                    node.input.append("")
            node.input.append(name)
            done.append(f"{weight}: bias added to {node.op_type}")
            continue
        const = _fresh(used, f"{weight}_shift")
        graph.initializer.append(numpy_helper.from_array(shaped, const))
        original = node.output[0]
        renamed = _fresh(used, f"{original}_unshifted")
        node.output[0] = renamed
        new_nodes.append(helper.make_node("Add", [renamed, const], [original]))
        done.append(f"{weight}: Add after {node.op_type}")
    del graph.node[:]
    graph.node.extend(new_nodes)
    return done
