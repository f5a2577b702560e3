"""Reading ONNX models: tensors wherever they live, roles, policy, and bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from quantcore import JobKind, inspect_model, validate_job
from quantcore.errors import (
    InvalidModelError,
    NoWeightsError,
    UnsafeExternalDataError,
    UnsupportedModelError,
)
from quantcore.formats.onnx_reader import load_onnx
from quantcore.formats.roles import Role, select, select_weights
from quantcore.spec import QuantSpec
from tests import models


def _save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _roles(path: Path) -> dict[str, tuple[Role, int | None]]:
    return {t.name: (t.role, t.channel_axis) for t in load_onnx(path).tensors}


def test_cnn_roles_and_channel_axes(tmp_path):
    roles = _roles(_save(models.cnn(), tmp_path))
    assert roles["conv0.weight"] == (Role.WEIGHT, 0)
    assert roles["conv0.bias"] == (Role.BIAS, None)
    assert roles["bn1.var"] == (Role.NORM, None)
    assert roles["head.weight"] == (Role.WEIGHT, 0)  # Gemm transB=1: rows are outputs


def test_matmul_weight_axis_is_last(tmp_path):
    roles = _roles(_save(models.mlp(use_matmul=True), tmp_path))
    assert roles["fc0.weight"] == (Role.WEIGHT, 1)
    assert roles["fc0.bias"] == (Role.BIAS, None)


def test_constant_nodes_and_if_branches_are_found(tmp_path):
    consts = load_onnx(_save(models.with_constant_nodes(models.mlp()), tmp_path, "c.onnx"))
    assert {t.name for t in consts.tensors} >= {"fc0.weight", "fc2.bias"}
    assert all(t.where.startswith("Constant node") for t in consts.tensors)
    branches = load_onnx(_save(models.if_model(), tmp_path, "if.onnx"))
    found = {t.name: t for t in branches.tensors}
    assert found["then.weight"].role is Role.WEIGHT
    assert found["else.weight"].role is Role.WEIGHT
    assert "then_branch" in found["then.weight"].where
    assert "else_branch" in found["else.weight"].where
    if_node = models.if_model().graph.node[2]
    else_graph = next(a.g for a in if_node.attribute if a.name == "else_branch")
    np.testing.assert_array_equal(
        branches.array("else.weight"), onnx.numpy_helper.to_array(else_graph.node[0].attribute[0].t)
    )


def test_loop_body_at_depth_two(tmp_path):
    inner = models.if_model().graph.node[2]  # an If with weights in both branches
    body = helper.make_graph(
        [inner, helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["cond"]),
            helper.make_node("Loop", ["trip", "true"], ["ys"], body=body),
        ],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("ys", TensorProto.FLOAT, None)],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("trip", TensorProto.INT64, [], [2]),
            helper.make_tensor("true", TensorProto.BOOL, [], [True]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    found = {t.name: t for t in load_onnx(_save(model, tmp_path)).tensors}
    assert found["then.weight"].role is Role.WEIGHT
    assert found["then.weight"].where.count("/") == 2


def test_float16_weights_keep_their_dtype(tmp_path):
    model = load_onnx(_save(models.with_dtype(models.mlp(), TensorProto.FLOAT16), tmp_path))
    weight = next(t for t in model.tensors if t.name == "fc0.weight")
    assert weight.dtype == "float16"
    assert model.array("fc0.weight").dtype == np.float16


def test_default_policy_and_reasons(tmp_path):
    model = load_onnx(_save(models.cnn(), tmp_path))
    selection = select((t.candidate() for t in model.tensors), QuantSpec.from_dict({}))
    assert set(selection.quantize) == {"conv0.weight", "conv1.weight", "head.weight"}
    reasons = {s.name: s.reason for s in selection.skipped}
    assert reasons["conv0.bias"] == "bias"
    assert reasons["bn0.scale"].startswith("normalisation parameter")


def test_include_exclude_and_min_elements(tmp_path):
    model = load_onnx(_save(models.cnn(), tmp_path))
    tensors = [t.candidate() for t in model.tensors]
    spec = QuantSpec.from_dict({"exclude": ["^head"], "min_elements": 500})
    selection = select(tensors, spec)
    assert selection.quantize == ("conv1.weight",)  # conv0: 216 elements
    reasons = {s.name: s.reason for s in selection.skipped}
    assert reasons["head.weight"] == "excluded by pattern '^head'"
    assert "fewer than min_elements=500" in reasons["conv0.weight"]
    forced = select(tensors, QuantSpec.from_dict({"include": [r"bias$"]}))
    assert set(forced.quantize) == {"conv0.bias", "conv1.bias", "head.bias", "bn0.bias", "bn1.bias"}
    assert dict((s.name, s.reason) for s in forced.skipped)["conv0.weight"] == (
        "not matched by include"
    )


def test_tiny_weights_stay_float(tmp_path):
    model = load_onnx(_save(models.mlp(sizes=(2, 3, 2)), tmp_path))
    with pytest.raises(NoWeightsError, match="tiny: 6 elements"):
        select_weights([t.candidate() for t in model.tensors], QuantSpec.from_dict({}))


def test_already_quantized_weights_are_left_alone(tmp_path):
    model = load_onnx(_save(models.partly_quantized(), tmp_path))
    selection = select_weights([t.candidate() for t in model.tensors], QuantSpec.from_dict({}))
    assert selection.quantize == ("fc1.weight",)
    reasons = {s.name: s.reason for s in selection.skipped}
    assert reasons["fc0.weight_q"] == "not floating point (int8)"
    assert reasons["fc0.scale"] == "already quantized (input of DequantizeLinear)"


def test_graph_without_float_weights(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = load_onnx(_save(helper.make_model(graph), tmp_path))
    with pytest.raises(NoWeightsError, match="no floating-point weight"):
        select_weights([t.candidate() for t in model.tensors], QuantSpec.from_dict({}))


def test_not_onnx_and_truncated(tmp_path):
    text = tmp_path / "text.onnx"
    text.write_text("hello, this is not a model\n" * 10)
    with pytest.raises(InvalidModelError, match=r"text\.onnx"):
        load_onnx(text)
    data = models.mlp(sizes=(64, 64, 10)).SerializeToString()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 7):
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(InvalidModelError, match=r"cut\.onnx"):
            load_onnx(path)


def test_unsupported_opset_and_operator(tmp_path):
    old = models.mlp()
    old.opset_import[0].version = 5
    with pytest.raises(UnsupportedModelError, match="opset=5"):
        load_onnx(_save(old, tmp_path, "old.onnx"))
    custom = models.mlp()
    custom.graph.node[1].op_type = "FancyRelu"
    with pytest.raises(UnsupportedModelError, match=r"'FancyRelu'.*not defined in opset 17"):
        load_onnx(_save(custom, tmp_path, "op.onnx"))
    domain = models.mlp()
    domain.graph.node[1].domain = "com.example"
    with pytest.raises(UnsupportedModelError, match="custom domains"):
        load_onnx(_save(domain, tmp_path, "dom.onnx"))


def test_external_data_is_read(tmp_path):
    path = models.save_external(models.mlp(), tmp_path / "ext")
    model = load_onnx(path)
    np.testing.assert_array_equal(
        model.array("fc1.weight"), onnx.numpy_helper.to_array(models.mlp().graph.initializer[2])
    )


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("../outside.bin", "'..' would leave"),
        ("/etc/passwd", "absolute paths are refused"),
        ("missing.bin", "no such file"),
        ("link.bin", "symbolic link"),
    ],
)
def test_external_data_that_escapes_is_refused(tmp_path, location, message):
    folder = tmp_path / "model"
    path = models.save_external(models.mlp(), folder)
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    os.symlink(tmp_path / "outside.bin", folder / "link.bin")
    escaped = models.set_external_location(onnx.load(path, load_external_data=False), location)
    onnx.save(escaped, path)
    model = load_onnx(path)
    with pytest.raises(UnsafeExternalDataError, match=message):
        model.array("fc0.weight")


def test_truncated_external_data(tmp_path):
    path = models.save_external(models.mlp(), tmp_path / "m")
    data = tmp_path / "m" / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(UnsafeExternalDataError, match="past the end"):
        load_onnx(path).array("fc2.weight")


def test_inspect_model_and_validate_job(tmp_path):
    info = inspect_model(_save(models.cnn(), tmp_path))
    assert info.format == "onnx"
    assert info.n_tensors == 14
    assert info.n_params == sum(t.params for t in info.tensors)
    conv = next(t for t in info.tensors if t.name == "conv1.weight")
    assert (conv.shape, conv.dtype, conv.params) == ((16, 8, 3, 3), "float32", 1152)
    applied = validate_job(JobKind.QUANTIZE, {"bits": 3})
    assert applied["bits"] == 3 and applied["granularity"] == "auto"
    with pytest.raises(InvalidModelError, match="unknown model format"):
        inspect_model(tmp_path / "model.pt")
