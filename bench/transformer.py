"""A transformer-like ONNX model of a chosen size, for benchmarks of whole quantize jobs.

Token ids → embedding ``Gather`` → ``layers`` blocks of single-head attention (``MatMul`` with
Wq, Wk, Wv, Wo, softmax over the sequence) and a feed-forward pair (``MatMul`` d×4d, ``Relu``,
``MatMul`` 4d×d), each with a residual ``Add`` and ``LayerNormalization`` → a ``MatMul`` head.
Weights are float32 Laplacian with a fan-in scale (seeded: the same file every run), so the
model's outputs are finite and its weights have the heavy tails of trained ones. 12·d² weights
per block; ``SIZES`` gives the shapes of the benchmarks' models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class Shape:
    d: int
    layers: int
    vocab: int
    classes: int = 16

    @property
    def params(self) -> int:
        return 12 * self.d * self.d * self.layers + self.vocab * self.d + self.d * self.classes \
            + self.layers * 4 * self.d  # LayerNorm scales and biases


SIZES = {
    "54m": Shape(d=768, layers=7, vocab=5000),
    "205m": Shape(d=1024, layers=16, vocab=4000),
    "608m": Shape(d=1536, layers=21, vocab=8000),
}


def _weight(rng: np.random.Generator, name: str, rows: int, cols: int) -> TensorProto:
    scale = 1.0 / math.sqrt(2.0 * rows)  # Laplacian of std 1/√rows
    w = rng.laplace(0.0, scale, size=(rows, cols)).astype(np.float32)
    return numpy_helper.from_array(w, name)


def build(shape: Shape, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    d = shape.d
    inits = [_weight(rng, "embed", shape.vocab, d)]
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["h0"])]
    inits.append(numpy_helper.from_array(np.array([1.0 / math.sqrt(d)], np.float32), "attn_scale"))
    x = "h0"
    for i in range(shape.layers):
        p = f"l{i}."
        for w, rows, cols in (("wq", d, d), ("wk", d, d), ("wv", d, d), ("wo", d, d),
                              ("ff1", d, 4 * d), ("ff2", 4 * d, d)):  # fmt: skip
            inits.append(_weight(rng, p + w, rows, cols))
        for n in ("ln1", "ln2"):
            inits.append(numpy_helper.from_array(np.ones(d, np.float32), p + n + ".g"))
            inits.append(numpy_helper.from_array(np.zeros(d, np.float32), p + n + ".b"))
        nodes += [
            helper.make_node("MatMul", [x, p + "wq"], [p + "q"]),
            helper.make_node("MatMul", [x, p + "wk"], [p + "k"]),
            helper.make_node("MatMul", [x, p + "wv"], [p + "v"]),
            helper.make_node("Transpose", [p + "k"], [p + "kt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", [p + "q", p + "kt"], [p + "s0"]),
            helper.make_node("Mul", [p + "s0", "attn_scale"], [p + "s1"]),
            helper.make_node("Softmax", [p + "s1"], [p + "a"], axis=-1),
            helper.make_node("MatMul", [p + "a", p + "v"], [p + "c"]),
            helper.make_node("MatMul", [p + "c", p + "wo"], [p + "o"]),
            helper.make_node("Add", [x, p + "o"], [p + "r1"]),
            helper.make_node("LayerNormalization", [p + "r1", p + "ln1.g", p + "ln1.b"],
                             [p + "n1"], axis=-1),
            helper.make_node("MatMul", [p + "n1", p + "ff1"], [p + "f1"]),
            helper.make_node("Relu", [p + "f1"], [p + "f2"]),
            helper.make_node("MatMul", [p + "f2", p + "ff2"], [p + "f3"]),
            helper.make_node("Add", [p + "n1", p + "f3"], [p + "r2"]),
            helper.make_node("LayerNormalization", [p + "r2", p + "ln2.g", p + "ln2.b"],
                             [p + "h"], axis=-1),
        ]  # fmt: skip
        x = p + "h"
    inits.append(_weight(rng, "head", d, shape.classes))
    nodes.append(helper.make_node("MatMul", [x, "head"], ["logits"]))
    graph = helper.make_graph(
        nodes, "transformer_like",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["batch", "seq", shape.classes])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def write(name: str, folder: Path) -> Path:
    """``folder/transformer-<name>.onnx``, built once (reused when already there)."""
    path = folder / f"transformer-{name}.onnx"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(build(SIZES[name]).SerializeToString())
        partial.replace(path)
    return path
