"""Decode subgraphs written as calls of model-local functions: fewer bytes, and the same
session graph once onnxruntime has inlined and folded them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
from onnx import helper

from quantcore.compress.layerwise import quantize_tensors
from quantcore.compress.results import TensorRequest
from quantcore.formats.decode_functions import DOMAIN, FUNCTIONS_IR_VERSION, DecodeFunctions
from quantcore.formats.decode_graph import _one_block_shape
from quantcore.formats.onnx_reader import load_onnx
from quantcore.formats.onnx_writer import rewrite
from quantcore.spec import Granularity, QuantizerSpec, Support
from tests import models
from tests.core.formats.onnx_helpers import affine, run

X = np.random.default_rng(3).normal(size=(2, 3, 12, 12)).astype(np.float32)


def _written(tmp_path: Path, size: int) -> onnx.ModelProto:
    """A CNN with BatchNormalization, every weight at 4 bits in blocks of ``size`` with zero
    points (conv0 sums 27 inputs, conv1 72 and conv2 144, the head 32)."""
    path = tmp_path / "cnn.onnx"
    onnx.save(models.cnn(channels=(3, 8, 16, 16, 32), opset=21), path)
    source = load_onnx(path)
    spec = QuantizerSpec(bits=4, support=Support.MAX_ABS).resolved()
    requests = [TensorRequest(name=t.name, weights=source.array(t.name), quantizer=spec,
                              channel_axis=t.channel_axis, block_axis=t.block_axis,
                              block_trailing=t.block_trailing)
                for t in source.tensors if t.role == "weight"]  # fmt: skip
    results = quantize_tensors(requests, Granularity.GROUP, group_size=size, zero_point=True)
    return rewrite(source, {r.name: r.quantized for r in results}).proto


def _optimized(model: onnx.ModelProto, tmp_path: Path, name: str) -> Counter[str]:
    """The op types of onnxruntime's optimized graph of ``model`` (basic level: constant
    folding and Conv + BatchNormalization fusion)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / name)
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(tmp_path / name).graph.node)


@pytest.mark.parametrize("size", [16, 32])
def test_one_call_per_tensor_and_the_session_graph_of_the_nodes(tmp_path, size):
    written = _written(tmp_path, size)
    calls = [n for n in written.graph.node if n.domain == DOMAIN]
    assert len(calls) == 5  # four convs and the head
    assert {n.op_type for n in calls} == {f.name for f in written.functions}
    assert len(written.functions) < len(calls)  # shared bodies
    assert all(f.domain == DOMAIN and f.doc_string.startswith("decode: ")
               for f in written.functions)  # fmt: skip
    onnx.checker.check_model(written, full_check=True)
    inlined = onnx.inliner.inline_local_functions(written)
    assert not inlined.functions or all(n.domain != DOMAIN for n in inlined.graph.node)
    for a, b in zip(run(written, {"x": X}), run(inlined, {"x": X}), strict=True):
        np.testing.assert_array_equal(a, b)
    # Inlined at load and folded: nothing of the decode remains, BatchNormalization is fused.
    ops = _optimized(written, tmp_path, "functions.onnx")
    assert ops == _optimized(inlined, tmp_path, "nodes.onnx")
    assert not {"Cast", "Sub", "Mul", "Gather", "Range", "BatchNormalization"} & set(ops)
    assert written.ByteSize() < inlined.ByteSize()


def test_a_model_that_uses_the_domain_gets_another(tmp_path):
    model = models.mlp(opset=21)
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    functions = DecodeFunctions(model, 21)
    assert functions.domain == f"{DOMAIN}2"
    nodes = [helper.make_node("Cast", ["q1.c"], ["q1.0"], to=1),
             helper.make_node("Mul", ["q1.0", "q1.s"], ["w"])]  # fmt: skip
    (call,) = functions.call(nodes)
    assert (call.domain, list(call.input), list(call.output)) == (f"{DOMAIN}2", ["q1.c", "q1.s"],
                                                                  ["w"])  # fmt: skip
    # The parameters spell the roles out; a single node is not wrapped.
    body = functions._bodies[next(iter(functions._bodies))]
    assert list(body.input) == ["codes", "scale"]
    assert functions.call(nodes[1:]) == nodes[1:]


@pytest.mark.parametrize(
    ("shape", "view", "axis", "expected"),
    [
        ((8, 3, 3, 3), (8, 27), 1, (8, 1, 1, 1)),  # Conv: the block is the input and kernel
        ((16, 10), (16, 10), 0, (1, 10)),  # MatMul: along K
        ((2, 8, 3, 3), (2, 8, 9), 2, (2, 8, 1, 1)),
        ((2, 8, 3, 3), (2, 8, 9), 1, (2, 1, 3, 3)),
        ((6, 4), (4, 6), 0, None),  # regrouped: no run of dims is the axis
    ],
)
def test_one_block_shape(shape, view, axis, expected):
    assert _one_block_shape(shape, view, axis) == expected


@pytest.mark.parametrize("ir_version", [4, 7])
def test_an_older_model_gets_the_ir_version_of_local_functions(tmp_path, ir_version):
    model = models.mlp(opset=11)
    model.ir_version = ir_version
    onnx.save(model, tmp_path / "m.onnx")
    source = load_onnx(tmp_path / "m.onnx")
    quantized = {t.name: affine(source.array(t.name), 5, axis=t.channel_axis)
                 for t in source.tensors if t.name.endswith("weight")}  # fmt: skip
    written = rewrite(source, quantized).proto
    assert written.functions and written.ir_version == FUNCTIONS_IR_VERSION
    onnx.checker.check_model(written, full_check=True)
    x = np.random.default_rng(5).normal(size=(3, 16)).astype(np.float32)
    inlined = onnx.inliner.inline_local_functions(written)
    np.testing.assert_array_equal(run(written, {"x": x})[0], run(inlined, {"x": x})[0])
