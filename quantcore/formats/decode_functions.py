"""Each tensor's decode subgraph in ``model.onnx`` as one call of a model-local function.

The decode subgraphs repeat a handful of shapes (``Cast``, ``Sub``, ``Mul``, ``Reshape``, ...)
that differ only in their constants. Written out node by node they weigh ~230 bytes a tensor:
on a small model (a 124K-parameter classifier of 54 tensors) a fifth of its 4-bit codes. Each
distinct body is stored once in ``ModelProto.functions`` and every tensor's decode is one node
calling it on its own initializers.

onnxruntime inlines model-local functions when it loads the model, before constant folding, so
the session's optimized graph is the same (measured: the same node counts, BatchNormalization
fused into Conv, the same outputs bit for bit and the same latency). onnx's checker and shape
inference read them too.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

import onnx
from onnx import helper

DOMAIN = "quantserve"  # the functions' domain; another name if the model already uses it
FUNCTIONS_IR_VERSION = 8  # ModelProto.functions came with IR version 8 (onnx 1.10)
# The writer's initializer tags (``q7.s``) and the parameter names they become.
ROLES = {"c": "codes", "s": "scale", "z": "zero_point", "l": "levels", "o": "offset",
         "shape": "shape", "n": "n"}  # fmt: skip


class DecodeFunctions:
    """The functions of one written model, and the calls that use them."""

    def __init__(self, model: onnx.ModelProto, opset: int) -> None:
        used = {o.domain for o in model.opset_import} | {f.domain for f in model.functions}
        self.domain = next(d for d in _candidates() if d not in used)
        self.opset = opset
        self._bodies: dict[bytes, onnx.FunctionProto] = {}

    def call(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """``nodes`` (one decode subgraph, its last node's output the tensor's name) as one
        node calling the function of the same body; a single node is left as it is."""
        if len(nodes) < 2:
            return nodes
        produced = {o for n in nodes for o in n.output}
        inputs: list[str] = []  # the subgraph's initializers, in order of first use
        for name in (i for node in nodes for i in node.input):
            if name not in produced and name not in inputs:
                inputs.append(name)
        parameters = _parameters(inputs)
        rename = dict(zip(inputs, parameters, strict=True))
        rename.update({n.output[0]: f"t{k}" for k, n in enumerate(nodes)})
        output = nodes[-1].output[0]
        rename[output] = "y"
        body = []
        for node in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [rename[i] for i in node.input]
            copy.output[:] = [rename[o] for o in node.output]
            body.append(copy)
        key = b"".join(n.SerializeToString() for n in body)
        function = self._bodies.get(key)
        if function is None:
            function = helper.make_function(
                self.domain, f"d{len(self._bodies) + 1}", parameters,
                ["y"], body, [helper.make_opsetid("", self.opset)],
                doc_string="decode: " + ", ".join(n.op_type for n in body),
            )  # fmt: skip
            self._bodies[key] = function
        return [helper.make_node(function.name, inputs, [output], domain=self.domain)]

    def add_to(self, model: onnx.ModelProto) -> None:
        """Store the functions in ``model`` and import their domain (if any was called); an
        older model's IR version is raised to the first that has local functions."""
        if not self._bodies:
            return
        model.functions.extend(self._bodies.values())
        model.opset_import.append(helper.make_opsetid(self.domain, 1))
        model.ir_version = max(model.ir_version, FUNCTIONS_IR_VERSION)


def _parameters(inputs: list[str]) -> list[str]:
    """The function's parameter names: each input's role (``q7.s`` -> ``scale``), numbered
    where a role repeats (``n0``, ``n1``: Range's and Div's integers)."""
    roles = [ROLES.get(_tag(name), "x") for name in inputs]
    counts = Counter(roles)
    seen: Counter[str] = Counter()
    names = []
    for role in roles:
        names.append(role if counts[role] == 1 else f"{role}{seen[role]}")
        seen[role] += 1
    return names


def _tag(name: str) -> str:
    """The writer's tag of an initializer name: ``q7.s`` -> ``s``, ``q7.n_2`` -> ``n`` (the
    ``_2`` is ``Names.fresh``'s, for a name the model already had)."""
    tag = name.partition(".")[2]
    base, _, number = tag.rpartition("_")
    return base if base and number.isdigit() else tag


def _candidates() -> Iterator[str]:
    return itertools.chain([DOMAIN], (f"{DOMAIN}{k}" for k in itertools.count(2)))
