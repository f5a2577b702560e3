"""Quantize jobs with ``calibration``: GPTQ's codes through onnxruntime, bias correction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantcore import JobInput, JobKind, run_job
from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.jobs.calibrate import capture
from quantcore.limits import JobLimits
from quantcore.spec import QuantSpec
from tests import models
from tests.core.formats.onnx_helpers import exposing, run

RNG = np.random.default_rng(9)


def _single(op: str, k: int = 64, n: int = 24) -> onnx.ModelProto:
    """One layer: MatMul (no bias: an Add is written), Gemm with a bias (shifted), or a
    strided Conv without bias (one is added)."""
    w_shape = {"MatMul": (k, n), "Gemm": (n, k), "Conv": (n, k // 4, 3, 3)}[op]
    inits = [numpy_helper.from_array((RNG.laplace(size=w_shape) * 0.1).astype(np.float32), "w")]
    if op == "MatMul":
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
    elif op == "Gemm":
        inits.append(numpy_helper.from_array(RNG.normal(size=n).astype(np.float32), "b"))
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)
    else:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    x_shape: list[int | str] = ["N", k] if op != "Conv" else ["N", k // 4, 10, 10]
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inputs(shape: tuple[int, ...], samples: int, mean: float = 1.5) -> np.ndarray:
    """Correlated, off-centre inputs (what follows a ReLU or a normalised image)."""
    base = RNG.standard_normal((samples, *shape)).astype(np.float32)
    return (base + 0.8 * base.mean(axis=1, keepdims=True) + mean).astype(np.float32)


def _job(tmp_path: Path, model: onnx.ModelProto, spec: dict, x: np.ndarray | None,
         name: str) -> tuple[dict, Path]:  # fmt: skip
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    dataset = None
    if x is not None:
        dataset = tmp_path / "set.npz"
        np.savez(dataset, x=x)
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec, dataset_path=dataset)
    out = run_job(job, tmp_path / name, limits=JobLimits(calibration_samples=512))
    return out.report, tmp_path / name / "model.onnx"


@pytest.mark.parametrize("op", ["MatMul", "Gemm", "Conv"])
def test_bias_correction_zeroes_the_output_mean_shift(tmp_path, op) -> None:
    model = _single(op)
    x = _inputs((64,) if op != "Conv" else (16, 10, 10), 512)
    (reference,) = run(model, {"x": x})
    means = {}
    # Blocks over their whole range (3 bits would clip them for least error): the clipped
    # blocks' mean errors are smaller to begin with, and more of them are left (halves disagree).
    for calibration in ("none", "bias"):
        spec = {"bits": 3, "support": "max_abs", "calibration": calibration}
        report, written = _job(tmp_path, model, spec, x, calibration)
        (got,) = run(onnx.load(written), {"x": x})
        axes = (0,) if op != "Conv" else (0, 2, 3)
        means[calibration] = np.abs((got - reference).mean(axis=axes)).max()
    # Channels whose mean error the two halves of the samples disagree on keep theirs, so
    # the largest left is a small one (those corrected are exact: test_gptq checks them).
    assert means["none"] > 1e-2
    assert means["bias"] < 0.3 * means["none"]
    (how,) = report["calibration"]["bias"]
    assert {"MatMul": "Add after MatMul", "Gemm": "bias b shifted",
            "Conv": "bias added to Conv"}[op] in how  # fmt: skip


@pytest.mark.parametrize("build", [lambda: models.mlp((48, 64, 32, 10), use_matmul=True),
                                   lambda: models.cnn(channels=(16, 32, 32))])  # fmt: skip
def test_gptq_codes_decode_bit_exactly_in_onnxruntime(tmp_path, build) -> None:
    model = build()
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    x = _inputs(shape, 256)
    report, written = _job(tmp_path, model, {"bits": 4, "calibration": "gptq"}, x, "gptq")
    assert report["calibration"]["inputs"] == "dataset"
    assert report["fidelity"]["in_sample"] is True
    assert any("in-sample" in w for w in report["warnings"])
    assert report["calibration"]["layers"] == report["calibration"]["of"] == len(report["layers"])
    notes = [n for row in report["layers"] for n in row["notes"] if "gptq" in n]
    assert any("below plain rounding" in n for n in notes), notes
    # The codes GPTQ chose, as decode() reads them, are what onnxruntime computes.
    path = tmp_path / "model.onnx"
    spec = QuantSpec.from_dict(report["spec"])
    source = load_model(path)
    calibrated = capture(source, path, spec, _evalset(path, tmp_path / "set.npz"),
                         JobLimits(calibration_samples=512))  # fmt: skip
    assert calibrated is not None
    qmodel = quantize_model(source, spec, stats=calibrated.gptq_stats)
    names = [w.name for w in qmodel.weights]
    got = run(exposing(onnx.load(written), names), {"x": x[:8]})[1:]
    for weight, value in zip(qmodel.weights, got, strict=True):
        np.testing.assert_array_equal(value, weight.dequantized())


def _evalset(model: Path, dataset: Path):  # type: ignore[no-untyped-def]
    from quantcore.evaluate import check_dataset

    return check_dataset(model, dataset)


def test_gptq_beats_plain_rounding_on_held_out_inputs(tmp_path) -> None:
    model = models.mlp((96, 128, 64, 10), use_matmul=True, seed=4)
    x = _inputs((96,), 1024)
    calib, held_out = x[:768], x[768:]
    (reference,) = run(model, {"x": held_out})
    errors = {}
    for calibration in ("none", "gptq"):
        _, written = _job(tmp_path, model, {"bits": 3, "calibration": calibration}, calib,
                          calibration)  # fmt: skip
        (got,) = run(onnx.load(written), {"x": held_out})
        errors[calibration] = float(np.sum((got - reference) ** 2))
    assert errors["gptq"] < 0.7 * errors["none"]


def test_calibration_needs_a_dataset(tmp_path) -> None:
    report, _ = _job(tmp_path, models.mlp(), {"bits": 4, "calibration": "gptq"}, None, "out")
    block = report["calibration"]
    assert block["inputs"] is None and block["layers"] == 0
    assert any("calibration 'gptq' was not run" in w for w in report["warnings"])


def test_layers_it_cannot_handle_are_listed(tmp_path) -> None:
    model = models.if_model()
    x = _inputs((8,), 64)
    report, _ = _job(tmp_path, model, {"bits": 4, "calibration": "gptq"}, x, "out")
    block = report["calibration"]
    assert block["layers"] == 0 and block["of"] == 2
    assert {s["reason"] for s in block["skipped"]} == {
        "inside a subgraph: rounded plainly (no calibration)"
    }


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_a_linked_model_file_is_calibrated_as_its_own_copy(tmp_path, link) -> None:
    """onnxruntime reads no external data from a file with several hard links (a worker's
    input, linked from storage) or from a symbolic link; the capture's session then takes the
    weights into its graph: the same calibration, the same codes, as from a plain copy."""
    model = _single("MatMul", k=256, n=128)  # w: 128 KiB, left in the file when read
    x = _inputs((256,), 256)
    (tmp_path / "copy").mkdir()
    report, written = _job(tmp_path / "copy", model, {"bits": 4, "calibration": "gptq"}, x, "q")
    folder = tmp_path / link
    folder.mkdir()
    source = folder / "original.onnx"
    onnx.save(model, str(source))
    path = folder / "model.onnx"
    if link == "hard":
        path.hardlink_to(source)
    else:
        path.symlink_to(source)
    np.savez(folder / "set.npz", x=x)
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path,
                   spec={"bits": 4, "calibration": "gptq"}, dataset_path=folder / "set.npz")
    linked = run_job(job, folder / "q", limits=JobLimits(calibration_samples=512)).report
    timeless = [{k: v for k, v in r["calibration"].items() if k != "seconds"}
                for r in (linked, report)]  # fmt: skip
    assert timeless[0] == timeless[1] and linked["calibration"]["layers"] == 1
    assert (folder / "q" / "model.onnx").read_bytes() == written.read_bytes()
