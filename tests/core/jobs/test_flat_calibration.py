"""Spec ``calibration="flat"``: data-free GPTQ on flat inputs, through onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore.compress.hessian import Accumulator, Geometry
from tests.core.formats.onnx_helpers import run
from tests.core.jobs.calibration_helpers import quantize_job, sqnr_db

RNG = np.random.default_rng(11)
CHANNELS = 16


def _dominated_conv() -> onnx.ModelProto:
    """A 1x1 Conv whose bias holds channel 0 near 20 (its weights almost zero) beside
    channels of RMS ~0.05, then ReLU, then the 3x3 Conv ``w`` reading them all: each of
    ``w``'s rounding errors on channel 0 multiplies 20, the others' ~0.05."""
    pre = (RNG.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 0.05).astype(np.float32)
    pre[0] *= 0.01
    bias = np.zeros(CHANNELS, np.float32)
    bias[0] = 20.0
    w = (RNG.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((pre, "pre"), (bias, "pre_b"), (w, "w"))]
    nodes = [
        helper.make_node("Conv", ["x", "pre", "pre_b"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "dominated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", CHANNELS, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_flat_gptq_beats_plain_rounding_where_a_channel_dominates(tmp_path) -> None:
    model = _dominated_conv()
    x = RNG.standard_normal((32, CHANNELS, 12, 12)).astype(np.float32)  # real inputs
    (reference,) = run(model, {"x": x})
    sqnr = {}
    reports = {}
    for calibration in ("none", "flat"):
        spec = {"bits": 8, "calibration": calibration, "include": ["^w$"]}
        reports[calibration], written = quantize_job(tmp_path, model, spec, calibration)
        (got,) = run(onnx.load(written), {"x": x})
        sqnr[calibration] = sqnr_db(reference, got)
    assert sqnr["flat"] > sqnr["none"] + 5.0, sqnr  # measured: 45.7 -> 55.6 dB
    block = reports["flat"]["calibration"]
    assert block["method"] == "flat" and block["inputs"] == "flat"
    assert block["samples"] == 4 and block["layers"] == block["of"] == 1
    assert block["bias"] == []  # the flat inputs' mean is not the real inputs': no shift
    (row,) = reports["flat"]["layers"]
    assert any(n.startswith("flat-input gptq: layer output error") for n in row["notes"])
    assert "in_sample" not in reports["flat"]["fidelity"]
    assert not any("in-sample" in w for w in reports["flat"]["warnings"])


def _reflect_padded() -> onnx.ModelProto:
    """A Conv after a reflect Pad wider than the synthetic inputs' length: it runs on long
    real inputs, not on the flat inputs made in the synthetic shapes."""
    w = (RNG.standard_normal((8, 4, 3)) * 0.1).astype(np.float32)
    pads = numpy_helper.from_array(np.array([0, 0, 200, 0, 0, 200], np.int64), "pads")
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), pads],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_model_that_cannot_run_on_flat_inputs_is_rounded_plainly(tmp_path) -> None:
    model = _reflect_padded()
    _, plain_path = quantize_job(tmp_path, model, {"bits": 8}, "none")
    report, path = quantize_job(tmp_path, model, {"bits": 8, "calibration": "flat"}, "flat")
    (warning,) = [w for w in report["warnings"] if "calibration 'flat' was not run" in w]
    assert "could not run on flat inputs" in warning and "Pad" in warning, warning
    assert report["calibration"]["layers"] == 0 and report["calibration"]["inputs"] is None
    x = RNG.standard_normal((2, 4, 400)).astype(np.float32)
    (got,) = run(onnx.load(path), {"x": x})
    (want,) = run(onnx.load(plain_path), {"x": x})
    np.testing.assert_array_equal(got, want)  # the same codes as plain rounding


def test_block_diagonal_capture_sums_the_full_hessians_diagonal_blocks() -> None:
    geometry = Geometry(op="Conv", rows=8, k=12 * 9, groups=2, kernel=(3, 3), strides=(1, 1),
                        pads=(1, 1, 1, 1), dilations=(1, 1))  # fmt: skip
    x = RNG.standard_normal((3, 24, 7, 7)).astype(np.float32) + 2.0
    full = Accumulator(geometry=geometry, max_rows=10**6)
    blocked = Accumulator(geometry=geometry, max_rows=10**6, block=32)
    for acc in (full, blocked):
        acc.add(x)
    assert blocked.stats.block == 32 and blocked.stats.count == full.stats.count
    # Only the diagonal blocks are kept: 4 of 32 columns, the last 12 wide, zero past k.
    assert blocked.stats.hessian.shape == (2, 4, 32, 32)
    last = blocked.stats.hessian[:, -1]
    assert not last[:, 12:].any() and not last[:, :, 12:].any()
    for lo in range(0, geometry.k, 32):
        hi = min(lo + 32, geometry.k)
        np.testing.assert_allclose(blocked.stats.diagonal(lo, hi), full.stats.diagonal(lo, hi),
                                   rtol=1e-5)  # fmt: skip
    inner = blocked.stats.diagonal(40, 48)  # a quantizer's block of 8 inside the second
    np.testing.assert_array_equal(inner, blocked.stats.hessian[:, 1, 8:16, 8:16])
    with pytest.raises(ValueError, match="cross a summed block"):
        blocked.stats.diagonal(24, 40)
    # A block as wide as the layer is the full Hessian.
    assert Accumulator(geometry=geometry, block=geometry.k).stats.block == 0


def test_the_default_calibrates_on_flat_inputs_from_6_bits(tmp_path) -> None:
    model = _dominated_conv()
    x = RNG.standard_normal((32, CHANNELS, 12, 12)).astype(np.float32)
    (reference,) = run(model, {"x": x})
    report, written = quantize_job(tmp_path, model, {"bits": 8, "include": ["^w$"]}, "auto8")
    block = report["calibration"]
    assert block["method"] == "flat" and block["layers"] == 1, block
    assert block["auto"].startswith("auto: data-free GPTQ on flat inputs at 8 bits"), block
    assert report["spec"]["calibration"] == "flat"  # the spec as applied
    _, plain = quantize_job(tmp_path, model, {"bits": 8, "include": ["^w$"], "calibration": "none"},
                    "none8")  # fmt: skip
    (got,) = run(onnx.load(written), {"x": x})
    (plain_got,) = run(onnx.load(plain), {"x": x})
    assert sqnr_db(reference, got) > sqnr_db(reference, plain_got) + 5.0
    # Below 6 bits the default rounds plainly and says why.
    report, _ = quantize_job(tmp_path, model, {"bits": 4, "include": ["^w$"]}, "auto4")
    block = report["calibration"]
    assert block["method"] == "none" and block["layers"] == 0
    assert "below 6 bits" in block["auto"] and block["reason"] == block["auto"]
    assert not any("calibration" in w for w in report["warnings"])


def test_the_default_says_nothing_when_flat_inputs_cannot_run(tmp_path) -> None:
    report, _ = quantize_job(tmp_path, _reflect_padded(), {"bits": 8}, "auto")
    block = report["calibration"]
    assert block["method"] == "flat" and block["layers"] == 0
    assert "could not run on flat inputs" in block["reason"]
    assert block["auto"].startswith("auto: data-free GPTQ") and "; not run: " in block["auto"]
    assert not any("calibration" in w for w in report["warnings"]), report["warnings"]
