"""Inputs synthesised from a graph's input types and shapes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from quantcore.evaluate.outputs import class_outputs
from quantcore.evaluate.synthetic import BATCH, BATCHES, LENGTH, SPATIAL, synthetic_set
from tests.models import cnn, mlp


def _token_model(vocab: int = 50) -> onnx.ModelProto:
    """ids (batch, seq) -> embedding -> masked mean -> softmax over 5 classes."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((vocab, 8)).astype(np.float32), "emb")
    head = numpy_helper.from_array(rng.standard_normal((8, 5)).astype(np.float32), "head")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceMean", ["em"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("Identity", ["probs"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5]),
         helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 8])],
        [table, head, numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_float_inputs_get_a_batch_and_fixed_dims() -> None:
    found = synthetic_set(cnn())
    assert found.describe() == {"x": [BATCH, 3, 12, 12]}
    batches = [feeds for feeds, _ in found.batches(999)]
    assert len(batches) == BATCHES == found.samples // BATCH
    x = np.concatenate([b["x"] for b in batches])
    assert x.dtype == np.float32 and abs(float(x.std()) - 1.0) < 0.1
    again = np.concatenate([feeds["x"] for feeds, _ in found.batches(1)])
    np.testing.assert_array_equal(x, again)  # fixed seed


def test_integer_inputs_stay_within_the_table_they_index_and_masks_are_ones() -> None:
    found = synthetic_set(_token_model(vocab=50))
    feeds, _ = next(iter(found.batches(found.batch)))
    assert feeds["ids"].shape == (BATCH, LENGTH) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 50
    assert np.all(feeds["mask"] == 1)


def test_symbolic_image_axes_take_the_spatial_default() -> None:
    model = cnn()
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "side"
    assert synthetic_set(model).describe() == {"x": [BATCH, 3, SPATIAL, SPATIAL]}
    assert synthetic_set(model, spatial=32).describe() == {"x": [BATCH, 3, 32, 32]}


def test_a_fixed_batch_is_kept() -> None:
    model = mlp()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    found = synthetic_set(model)
    assert found.fixed_batch == 1 and found.describe() == {"x": [1, 16]}


def test_class_outputs_are_softmaxes_and_the_declared_scores() -> None:
    assert class_outputs(_token_model()) == ("scores",)  # pooled (batch, 8) is no softmax...
    assert class_outputs(mlp()) == ("y",)  # ...but a rank-2 output of declared width is


def test_rebatching_resizes_a_free_batch_axis_only() -> None:
    found = synthetic_set(_token_model()).rebatched(16, 4)
    assert found.describe() == {"ids": [16, LENGTH], "mask": [16, LENGTH]}
    assert found.samples == 64 and len(list(found.batches(1))) == 4
    model = mlp()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = synthetic_set(model).rebatched(16, 64)
    assert fixed.describe() == {"x": [1, 16]} and fixed.samples == 64


def test_token_ids_and_masks_are_not_float_inputs() -> None:
    assert not synthetic_set(_token_model()).has_float_input
    assert synthetic_set(cnn()).has_float_input
