"""ONNX models built with ``onnx.helper`` for the tests (and the benchmark).

Each builder returns a checked ``onnx.ModelProto`` with seeded Laplacian weights (the
distribution the quantizers are designed for). Inputs are named ``x`` with a symbolic batch
dimension ``N``; outputs are named ``y``.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEFAULT_OPSET = 17


def _weights(rng: np.random.Generator, shape: Sequence[int], fan_in: int) -> np.ndarray:
    scale = 1.0 / np.sqrt(2.0 * fan_in)  # Laplacian with variance 1/fan_in
    return rng.laplace(0.0, scale, size=tuple(shape)).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    x_shape: Sequence[int | str],
    y_shape: Sequence[int | str],
    opset: int,
    name: str,
    elem_type: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", elem_type, list(x_shape))],
        [helper.make_tensor_value_info("y", elem_type, list(y_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def mlp(
    sizes: Sequence[int] = (16, 32, 24, 10),
    *,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
    use_matmul: bool = False,
) -> onnx.ModelProto:
    """``Gemm(transB=1) -> Relu`` layers (or ``MatMul -> Add`` with ``use_matmul``).

    Weights are named ``fc{i}.weight`` (shape ``(out, in)`` for Gemm, ``(in, out)`` for MatMul)
    and biases ``fc{i}.bias``.
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev = "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = _weights(rng, (n_out, n_in), n_in)
        b = rng.normal(0.0, 0.1, n_out).astype(np.float32)
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        pre = out if out == "y" else f"z{i}"
        if use_matmul:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), f"fc{i}.weight"))
            nodes.append(helper.make_node("MatMul", [prev, f"fc{i}.weight"], [f"m{i}"]))
            nodes.append(helper.make_node("Add", [f"m{i}", f"fc{i}.bias"], [pre]))
        else:
            inits.append(numpy_helper.from_array(w, f"fc{i}.weight"))
            nodes.append(
                helper.make_node("Gemm", [prev, f"fc{i}.weight", f"fc{i}.bias"], [pre], transB=1)
            )
        inits.append(numpy_helper.from_array(b, f"fc{i}.bias"))
        if out != "y":
            nodes.append(helper.make_node("Relu", [pre], [out]))
        prev = out
    return _model(nodes, inits, ["N", sizes[0]], ["N", sizes[-1]], opset, "mlp")


def cnn(
    *,
    channels: Sequence[int] = (3, 8, 16),
    classes: int = 10,
    opset: int = DEFAULT_OPSET,
    seed: int = 0,
) -> onnx.ModelProto:
    """``Conv -> BatchNormalization -> Relu`` blocks, global pooling and a ``Gemm`` head.

    Input ``x`` is ``(N, channels[0], 12, 12)``. Tensors: ``conv{i}.weight`` / ``conv{i}.bias``,
    ``bn{i}.scale`` / ``.bias`` / ``.mean`` / ``.var``, ``head.weight`` / ``head.bias``.
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev = "x"
    for i, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        w = _weights(rng, (c_out, c_in, 3, 3), c_in * 9)
        inits += [
            numpy_helper.from_array(w, f"conv{i}.weight"),
            numpy_helper.from_array(rng.normal(0, 0.1, c_out).astype(np.float32), f"conv{i}.bias"),
            numpy_helper.from_array(
                rng.uniform(0.5, 1.5, c_out).astype(np.float32), f"bn{i}.scale"
            ),
            numpy_helper.from_array(rng.normal(0, 0.1, c_out).astype(np.float32), f"bn{i}.bias"),
            numpy_helper.from_array(rng.normal(0, 0.1, c_out).astype(np.float32), f"bn{i}.mean"),
            numpy_helper.from_array(rng.uniform(0.5, 1.5, c_out).astype(np.float32), f"bn{i}.var"),
        ]
        nodes += [
            helper.make_node(
                "Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], pads=[1, 1, 1, 1]
            ),
            helper.make_node(
                "BatchNormalization",
                [f"c{i}", f"bn{i}.scale", f"bn{i}.bias", f"bn{i}.mean", f"bn{i}.var"],
                [f"b{i}"],
            ),
            helper.make_node("Relu", [f"b{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    c_last = channels[-1]
    inits += [
        numpy_helper.from_array(_weights(rng, (classes, c_last), c_last), "head.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "head.bias"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "head.weight", "head.bias"], ["y"], transB=1),
    ]
    return _model(nodes, inits, ["N", channels[0], 12, 12], ["N", classes], opset, "cnn")


def with_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every initializer moved into a ``Constant`` node (Paddle2ONNX style)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = [
        helper.make_node("Constant", [], [init.name], value=init, name=f"const_{init.name}")
        for init in out.graph.initializer
    ]
    del out.graph.initializer[:]
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out)
    return out


def if_model(*, n_in: int = 8, n_out: int = 6, opset: int = DEFAULT_OPSET, seed: int = 0):
    """``y = If(sum(x) > 0, then: MatMul(x, then.weight), else: MatMul(x, else.weight))``.

    The branch weights live in the branches' own initializers; the else branch also holds a
    ``Constant`` node (``else.bias``), so weights are found at depth one in both forms.
    """
    rng = np.random.default_rng(seed)
    w_then = _weights(rng, (n_in, n_out), n_in)
    w_else = _weights(rng, (n_in, n_out), n_in)
    b_else = rng.normal(0, 0.1, n_out).astype(np.float32)
    out_info = [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, ["N", n_out])]
    then_g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "then.weight"], ["y_then"])],
        "then",
        [],
        out_info,
        [numpy_helper.from_array(w_then, "then.weight")],
    )
    else_g = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["else.weight"], value=numpy_helper.from_array(w_else)
            ),
            helper.make_node("Constant", [], ["else.bias"], value=numpy_helper.from_array(b_else)),
            helper.make_node("MatMul", ["x", "else.weight"], ["m_else"]),
            helper.make_node("Add", ["m_else", "else.bias"], ["y_else"]),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, ["N", n_out])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    return _model(nodes, inits, ["N", n_in], ["N", n_out], opset, "if_model")


def loop_model(*, n_in: int = 8, n_out: int = 6, opset: int = DEFAULT_OPSET, seed: int = 0):
    """A ``Loop`` of two iterations whose body holds ``if_model``'s ``If``: weights at depth
    two (``then.weight``, ``else.weight``), reading ``x`` and ``cond`` from the outer scope.
    Output ``y`` stacks the two iterations: ``(2, N, n_out)``."""
    inner = if_model(n_in=n_in, n_out=n_out, opset=opset, seed=seed)
    if_node = inner.graph.node[2]
    if_node.output[0] = "y_iter"
    body = helper.make_graph(
        [if_node, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_iter", TensorProto.FLOAT, ["N", n_out]),
        ],
    )
    nodes = [
        *inner.graph.node[:2],
        helper.make_node("Loop", ["trip", "keep_going"], ["y"], body=body),
    ]
    inits = [
        *inner.graph.initializer,
        numpy_helper.from_array(np.array(2, np.int64), "trip"),
        numpy_helper.from_array(np.array(True), "keep_going"),
    ]
    return _model(nodes, inits, ["N", n_in], [2, "N", n_out], opset, "loop_model")


def with_dtype(model: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """The model with every float32 tensor, input and output turned into ``elem_type``.

    Only for models whose operators accept that type (the MLP: Gemm, Relu, MatMul, Add).
    """
    np_type = helper.tensor_dtype_to_np_dtype(elem_type)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, init in enumerate(out.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np_type)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr, init.name))
    for info in [*out.graph.input, *out.graph.output]:
        info.type.tensor_type.elem_type = elem_type
    onnx.checker.check_model(out)
    return out


def partly_quantized(*, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """An already-quantized first layer (int8 weight through ``DequantizeLinear``) followed by a
    float ``Gemm`` layer ``fc1.weight`` / ``fc1.bias``."""
    rng = np.random.default_rng(seed)
    w_q = rng.integers(-127, 128, size=(16, 24), dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["fc0.weight_q", "fc0.scale", "fc0.zp"], ["w0"]),
        helper.make_node("MatMul", ["x", "w0"], ["m0"]),
        helper.make_node("Relu", ["m0"], ["h0"]),
        helper.make_node("Gemm", ["h0", "fc1.weight", "fc1.bias"], ["y"], transB=1),
    ]
    inits = [
        numpy_helper.from_array(w_q, "fc0.weight_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "fc0.scale"),
        numpy_helper.from_array(np.array(0, np.int8), "fc0.zp"),
        numpy_helper.from_array(_weights(rng, (10, 24), 24), "fc1.weight"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc1.bias"),
    ]
    return _model(nodes, inits, ["N", 16], ["N", 10], opset, "partly_quantized")


def save_external(
    model: onnx.ModelProto, folder: Path, *, name: str = "model.onnx", location: str = "weights.bin"
) -> Path:
    """Save ``model`` into ``folder`` with every tensor of 16+ bytes in the external file
    ``location`` (relative to the folder); returns the model's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # save_model moves the data out of the proto it is given
    onnx.save_model(
        copy,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=16,
    )
    return path


def set_external_location(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """A copy whose external tensors all point at ``location`` (to build escaping models)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    return out


def sklearn_mlp(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """An ``MLPClassifier`` trained on the digits data, converted with skl2onnx.

    Returns the model (input ``X`` float32 ``(N, 64)``) and the digits images as float32.
    """
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=200, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # accuracy is not the point here
        clf.fit(x, digits.target)
    model = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})
    return model, x


def large(
    n_params: int = 50_000_000, *, opset: int = DEFAULT_OPSET, seed: int = 0
) -> onnx.ModelProto:
    """A Conv stem and a stack of ``MatMul`` layers with about ``n_params`` parameters.

    Input ``x`` is ``(N, 64, 8, 8)``; two 3x3 convolutions with 256 channels, then square
    MatMul layers of width 2048 (about 4.2 M parameters each) until at least ``n_params``.
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    convs = [(64, 256), (256, 256)]
    prev = "x"
    total = 0
    for i, (c_in, c_out) in enumerate(convs):
        w = _weights(rng, (c_out, c_in, 3, 3), c_in * 9)
        inits += [
            numpy_helper.from_array(w, f"conv{i}.weight"),
            numpy_helper.from_array(np.zeros(c_out, np.float32), f"conv{i}.bias"),
        ]
        nodes += [
            helper.make_node(
                "Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
        total += w.size + c_out
    width = 2048
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pool"]))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"]))
    w_in = _weights(rng, (256, width), 256)
    inits.append(numpy_helper.from_array(w_in, "proj.weight"))
    nodes.append(helper.make_node("MatMul", ["flat", "proj.weight"], ["h_in"]))
    total += w_in.size
    prev = "h_in"
    i = 0
    while total < n_params:
        w = _weights(rng, (width, width), width)
        inits.append(numpy_helper.from_array(w, f"fc{i}.weight"))
        nodes.append(helper.make_node("MatMul", [prev, f"fc{i}.weight"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i}"]))
        prev = f"h{i}"
        total += w.size
        i += 1
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(nodes, inits, ["N", 64, 8, 8], ["N", width], opset, "large")
