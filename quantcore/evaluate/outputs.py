"""Which outputs of a model look like class scores (for top-1 agreement over their last axis)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from quantcore.evaluate.dataset import scores_output

# Ops that pass class scores on unchanged in meaning (layout, type or name only).
_PASS_THROUGH = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten",
                           "Cast"})


def class_outputs(model: onnx.ModelProto) -> tuple[str, ...]:
    """Float outputs that look like class scores, for top-1 agreement over their last axis:
    those a ``Softmax``/``LogSoftmax`` makes (through layout-only ops), and the scores output
    (``scores_output``) when its width is declared."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for value in model.graph.output:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or len(tensor.shape.dim) < 2:
            continue
        if np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).kind != "f":
            continue
        node = producer.get(value.name)
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Softmax", "LogSoftmax"):
            found.append(value.name)
    scores = scores_output(model)
    if scores is not None and scores[1] is not None and scores[0] not in found:
        found.append(scores[0])
    return tuple(found)
