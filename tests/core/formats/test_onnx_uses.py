"""Roles through layout operators: weights that reach their operator through Slice, Concat,
Transpose, Reshape, Gather, ... are weights; biases and normalisation parameters stay float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore import JobInput, JobKind, run_job
from quantcore.formats.model import WeightTensor
from quantcore.formats.onnx_reader import load_onnx
from quantcore.formats.roles import Role
from tests.core.formats.onnx_helpers import run

RNG = np.random.default_rng(0)


def _laplace(*shape: int) -> np.ndarray:
    return RNG.laplace(0.0, 0.3, size=shape).astype(np.float32)


def _const(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


def _model(
    nodes: list[onnx.NodeProto],
    inits: dict[str, np.ndarray],
    x_shape: list[int],
    *,
    ints: tuple[onnx.TensorProto, ...] = (),
    outputs: tuple[str, ...] = ("y",),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()] + list(ints),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _tensors(model: onnx.ModelProto, tmp_path: Path) -> dict[str, WeightTensor]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return {t.name: t for t in load_onnx(path).tensors}


def _quantize(model: onnx.ModelProto, tmp_path: Path, x: np.ndarray, bits: int = 8):
    """The job's report and the output SQNR (dB) of its model against the float one."""
    path = tmp_path / "float.onnx"
    onnx.save(model, path)
    out = run_job(JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": bits}),
                  tmp_path / "out")  # fmt: skip
    quantized = onnx.load(next(a for a in out.artifacts if a.suffix == ".onnx"))
    ref, got = run(model, {"x": x}), run(quantized, {"x": x})
    pairs = [(r.astype(np.float64), g) for r, g in zip(ref, got, strict=True)]
    signal = sum(float(np.sum(r**2)) for r, _ in pairs)
    noise = sum(float(np.sum((r - g) ** 2)) for r, g in pairs)
    return out.report, 10 * np.log10(signal / noise)


def _axes(t: WeightTensor) -> tuple[Role, int | None, int | None]:
    return t.role, t.channel_axis, t.block_axis


def _lstm(hidden: int = 16, n_in: int = 12) -> onnx.ModelProto:
    """W and R sliced from one initializer ``wr`` (1, 4H, I + H); B sliced from ``b2``
    (2, 8H), the row the LSTM uses."""
    wr = _laplace(1, 4 * hidden, n_in + hidden) / np.float32(np.sqrt(n_in + hidden))
    nodes = [
        helper.make_node("Slice", ["wr", "w0", "w1", "ax2"], ["W"]),
        helper.make_node("Slice", ["wr", "w1", "r1", "ax2"], ["R"]),
        helper.make_node("Slice", ["b2", "zero", "one", "zero"], ["B"]),
        helper.make_node("LSTM", ["x", "W", "R", "B"], ["seq", "y"], hidden_size=hidden),
    ]
    ints = (_const("w0", [0]), _const("w1", [n_in]), _const("r1", [n_in + hidden]),
            _const("ax2", [2]), _const("zero", [0]), _const("one", [1]))  # fmt: skip
    inits = {"wr": wr, "b2": _laplace(2, 8 * hidden) / np.float32(4)}
    return _model(nodes, inits, [5, 2, n_in], ints=ints, outputs=("seq", "y"))


def test_lstm_weights_sliced_from_one_tensor_are_quantized_and_bias_stays(tmp_path):
    model = _lstm()
    found = _tensors(model, tmp_path)
    assert _axes(found["wr"]) == (Role.WEIGHT, 1, 2)  # gates; blocks along the inputs
    assert found["wr"].used_by == "LSTM via Slice"
    assert found["b2"].role is Role.BIAS
    x = RNG.normal(size=(5, 2, 12)).astype(np.float32)
    report, sqnr = _quantize(model, tmp_path, x)
    assert [layer["name"] for layer in report["layers"]] == ["wr"]
    assert {s["name"]: s["reason"] for s in report["skipped"]}["b2"] == "bias"
    assert sqnr > 30


def test_matmul_weight_through_transpose_maps_axes_back(tmp_path):
    w = _laplace(24, 32)  # (N, K), as a Linear layer stores it
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"])]  # fmt: skip
    model = _model(nodes, {"w": w}, [3, 32])
    t = _tensors(model, tmp_path)["w"]
    assert _axes(t) == (Role.WEIGHT, 0, 1)  # outputs N on axis 0, K (summed) on axis 1
    assert t.used_by == "MatMul via Transpose"
    _, sqnr = _quantize(model, tmp_path, RNG.normal(size=(3, 32)).astype(np.float32))
    assert sqnr > 30


def test_unsqueeze_and_squeeze_shift_axes(tmp_path):
    hidden, n_in = 8, 6
    nodes = [
        helper.make_node("Unsqueeze", ["w", "ax0"], ["W"]),  # (4H, I) -> (1, 4H, I)
        helper.make_node("Unsqueeze", ["r", "ax0"], ["R"]),
        helper.make_node("LSTM", ["x", "W", "R"], ["seq", "h"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h", "ax0"], ["h2"]),
        helper.make_node("Squeeze", ["v"], ["v2"]),  # (1, H, 1, 5) -> (H, 5)
        helper.make_node("MatMul", ["h2", "v2"], ["y"]),
    ]
    inits = {"w": _laplace(4 * hidden, n_in), "r": _laplace(4 * hidden, hidden),
             "v": _laplace(1, hidden, 1, 5)}  # fmt: skip
    model = _model(nodes, inits, [3, 2, n_in], ints=(_const("ax0", [0]),))
    found = _tensors(model, tmp_path)
    assert _axes(found["w"]) == (Role.WEIGHT, 0, 1)
    assert _axes(found["r"]) == (Role.WEIGHT, 0, 1)
    assert found["w"].used_by == "LSTM via Unsqueeze"
    assert _axes(found["v"]) == (Role.WEIGHT, 3, 1)


def test_reshape_to_matmul(tmp_path):
    nodes = [
        helper.make_node("Reshape", ["w", "s3"], ["w3"]),  # (K, N) -> (1, K, N): axes kept
        helper.make_node("Reshape", ["v", "s2"], ["v2"]),  # (K, 2, N/2) -> (K, N): merged
        helper.make_node("MatMul", ["x", "w3"], ["h"]),
        helper.make_node("MatMul", ["h", "v2"], ["y"]),
    ]
    ints = (_const("s3", [1, 32, 16]), _const("s2", [16, 8]))
    model = _model(nodes, {"w": _laplace(32, 16), "v": _laplace(16, 2, 4)}, [3, 32], ints=ints)
    found = _tensors(model, tmp_path)
    assert _axes(found["w"]) == (Role.WEIGHT, 1, 0)
    assert _axes(found["v"]) == (Role.WEIGHT, None, None)  # blocks then run along the last
    assert found["v"].used_by == "MatMul via Reshape"
    report, sqnr = _quantize(model, tmp_path, RNG.normal(size=(3, 32)).astype(np.float32))
    assert {layer["name"] for layer in report["layers"]} == {"w", "v"}
    assert sqnr > 30


def test_concat_of_two_initializers_into_a_conv_weight(tmp_path):
    nodes = [helper.make_node("Concat", ["wa", "wb"], ["w"], axis=0),
             helper.make_node("Split", ["bias", "halves"], ["b0", "b1"], axis=0),
             helper.make_node("Conv", ["x", "w", "b0"], ["y"])]  # fmt: skip
    inits = {"wa": _laplace(4, 3, 3, 3), "wb": _laplace(4, 3, 3, 3), "bias": _laplace(16)}
    ints = (_const("halves", [8, 8]),)
    model = _model(nodes, inits, [1, 3, 8, 8], ints=ints)
    found = _tensors(model, tmp_path)
    for name in ("wa", "wb"):
        assert _axes(found[name]) == (Role.WEIGHT, 0, 1)
        assert found[name].block_trailing and found[name].used_by == "Conv via Concat"
    assert found["bias"].role is Role.BIAS  # through Split, as the Conv's bias
    report, sqnr = _quantize(model, tmp_path, RNG.normal(size=(1, 3, 8, 8)).astype(np.float32))
    assert {s["name"]: s["reason"] for s in report["skipped"]}["bias"] == "bias"
    assert sqnr > 30


def test_gather_with_constant_indices_is_a_layout_operator(tmp_path):
    nodes = [
        helper.make_node("Gather", ["bank", "pick"], ["w"], axis=0),  # (3, K, N) -> (K, N)
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Gather", ["table", "pick"], ["row"], axis=0),  # -> (N,) then Mul
        helper.make_node("Mul", ["h", "row"], ["y"]),
    ]
    pick = helper.make_tensor("pick", TensorProto.INT64, [], [1])
    inits = {"bank": _laplace(3, 32, 16), "table": _laplace(4, 16)}
    model = _model(nodes, inits, [3, 32], ints=(pick,))
    found = _tensors(model, tmp_path)
    assert _axes(found["bank"]) == (Role.WEIGHT, 2, 1)
    assert found["bank"].used_by == "MatMul via Gather"
    # Nothing past the Gather gives a role: a table read by Gather, as without the path.
    assert _axes(found["table"]) == (Role.WEIGHT, 0, 1)
    assert found["table"].used_by == "Gather"


def test_computed_indices_keep_the_embedding_rule(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["ids"], to=TensorProto.INT64),
             helper.make_node("Gather", ["emb", "ids"], ["y"], axis=0)]  # fmt: skip
    found = _tensors(_model(nodes, {"emb": _laplace(10, 8)}, [4]), tmp_path)
    assert _axes(found["emb"]) == (Role.WEIGHT, 0, 1) and found["emb"].used_by == "Gather"


def test_normalisation_and_other_uses_through_layout_stay_float(tmp_path):
    nodes = [
        helper.make_node("Slice", ["ln", "zero", "eight", "zero"], ["gamma"]),
        helper.make_node("LayerNormalization", ["x", "gamma"], ["n"], axis=-1),
        helper.make_node("Reshape", ["scale", "shape"], ["s"]),
        helper.make_node("Mul", ["n", "s"], ["y"]),
    ]
    ints = (_const("zero", [0]), _const("eight", [8]), _const("shape", [2, 8]))
    found = _tensors(_model(nodes, {"ln": _laplace(16), "scale": _laplace(16)}, [2, 8],
                            ints=ints), tmp_path)  # fmt: skip
    assert found["ln"].role is Role.NORM
    assert found["ln"].used_by == "LayerNormalization via Slice"
    assert found["scale"].role is Role.OTHER and found["scale"].used_by == "Mul via Reshape"


def test_direct_and_layout_uses_make_a_weight_with_the_direct_axes(tmp_path):
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("MatMul", ["h", "wt"], ["y"])]  # fmt: skip
    t = _tensors(_model(nodes, {"w": _laplace(16, 16)}, [3, 16]), tmp_path)["w"]
    assert _axes(t) == (Role.WEIGHT, 1, 0) and t.used_by == "MatMul"


def test_path_into_a_subgraph_by_outer_name(tmp_path):
    branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wt"], ["z"])],
        "then",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z2"])],
        "else",
        [],
        [helper.make_tensor_value_info("z2", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Less", ["s", "big"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other),
    ]
    inits = {"w": _laplace(8, 8), "big": np.array(1e9, np.float32)}
    t = _tensors(_model(nodes, inits, [2, 8]), tmp_path)["w"]
    assert _axes(t) == (Role.WEIGHT, 0, 1) and t.used_by == "MatMul via Transpose"


@pytest.mark.parametrize("bits", [8, 4])
def test_lstm_quantized_model_runs_at_both_widths(tmp_path, bits):
    x = RNG.normal(size=(5, 2, 12)).astype(np.float32)
    _, sqnr = _quantize(_lstm(), tmp_path, x, bits)
    assert sqnr > (30 if bits == 8 else 15)
