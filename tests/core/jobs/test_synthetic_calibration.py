"""Spec ``calibration="synthetic"``: data-free GPTQ on inputs made up from the graph, which the
default picks up to 4 bits for a model whose inputs are token ids."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.core.formats.onnx_helpers import run
from tests.core.jobs.calibration_helpers import quantize_job, sqnr_db

RNG = np.random.default_rng(5)
VOCAB, DIM, HIDDEN = 500, 64, 48


def _token_model() -> onnx.ModelProto:
    """Token ids -> embedding -> MatMul ``w`` -> Tanh -> MatMul ``head``. The embedding's rows
    lie near an 8-dimensional subspace: its dimensions are strongly correlated, so the
    rounding error of one row of ``w`` can be cancelled by its neighbours', which GPTQ on the
    embedding rows does and plain rounding cannot."""
    basis = RNG.standard_normal((8, DIM)).astype(np.float32)
    table = RNG.standard_normal((VOCAB, 8)).astype(np.float32) @ basis
    table += RNG.standard_normal((VOCAB, DIM)).astype(np.float32) * 0.05
    w = (RNG.standard_normal((DIM, HIDDEN)) * 0.2).astype(np.float32)
    head = (RNG.standard_normal((HIDDEN, 10)) * 0.2).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((table, "table"), (w, "w"),
                                                         (head, "head"))]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
        helper.make_node("MatMul", ["e", "w"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("MatMul", ["t", "head"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tokens", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_the_default_calibrates_a_token_model_on_synthetic_tokens(tmp_path) -> None:
    model = _token_model()
    ids = RNG.integers(0, VOCAB, size=(64, 16))  # "real" inputs: not the synthetic seeds'
    (reference,) = run(model, {"ids": ids})
    sqnr, reports = {}, {}
    for name, spec in (("auto", {"bits": 4}), ("none", {"bits": 4, "calibration": "none"})):
        reports[name], written = quantize_job(tmp_path, model, spec, name)
        (got,) = run(onnx.load(written), {"ids": ids})
        sqnr[name] = sqnr_db(reference, got)
    block = reports["auto"]["calibration"]
    assert block["method"] == "synthetic" and block["inputs"] == "synthetic", block
    assert block["auto"].startswith("auto: GPTQ on synthetic token inputs at 4 bits"), block
    assert block["samples"] == 64 and block["layers"] >= 1
    assert block["bias"] == []  # made-up inputs' mean is not the real inputs': no shift
    assert reports["auto"]["spec"]["calibration"] == "synthetic"
    assert sqnr["auto"] > sqnr["none"] + 2.0, sqnr  # measured: 13.5 -> 16.4 dB


def test_a_token_model_is_rounded_plainly_above_4_bits(tmp_path) -> None:
    report, _ = quantize_job(tmp_path, _token_model(), {"bits": 5}, "auto5")
    block = report["calibration"]
    assert block["method"] == "none" and "token ids" in block["auto"], block


def test_a_float_input_model_is_not_calibrated_on_synthetic_inputs_by_default(tmp_path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", DIM])
    w = numpy_helper.from_array((RNG.standard_normal((DIM, HIDDEN)) * 0.2).astype(np.float32),
                                "w")  # fmt: skip
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "floats", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    report, _ = quantize_job(tmp_path, model, {"bits": 4}, "auto4")
    block = report["calibration"]
    assert block["method"] == "none" and "below 6 bits" in block["auto"], block
