"""The fidelity check of quantize jobs: synthetic or dataset inputs, warnings, attribution."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from quantcore import JobInput, JobKind, JobLimits, run_job
from quantcore.compress.pipeline import load_model, quantize_model
from quantcore.evaluate.attribution import layer_costs
from quantcore.evaluate.synthetic import synthetic_set
from quantcore.formats.weights_io import write_npz
from quantcore.spec import QuantSpec
from tests import models


def _job(tmp_path: Path, model: onnx.ModelProto, spec: dict, dataset: Path | None = None,
         limits: JobLimits | None = None) -> dict:  # fmt: skip
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec, dataset_path=dataset)
    return run_job(job, tmp_path / "out", limits=limits).report


def test_without_a_dataset_the_check_runs_on_synthetic_inputs(tmp_path) -> None:
    report = _job(tmp_path, models.mlp((16, 64, 10)), {"bits": 8})
    block = report["fidelity"]
    assert block["inputs"] == "synthetic"
    assert block["input_shapes"] == {"x": [4, 16]} and block["samples"] == 12
    assert block["output_sqnr_db"] > 35 and block["agreement"] == 1.0
    assert block["class_outputs"] == ["y"] and block["threshold_db"] == 20.0
    assert block["layers"] is None and report["warnings"] == []
    assert report["timings"]["fidelity_s"] + 1e-3 >= block["seconds"] > 0  # block: 3 decimals


def test_with_a_dataset_the_evaluation_is_reused(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=x)
    report = _job(tmp_path, models.mlp((16, 64, 10)), {"bits": 4}, tmp_path / "set.npz")
    block, accuracy = report["fidelity"], report["accuracy"]
    assert block["inputs"] == "dataset" and block["samples"] == 40
    assert block["output_sqnr_db"] == accuracy["output_sqnr_db"]  # one output: the same sums
    assert block["agreement"] == accuracy["agreement"]
    assert "input_shapes" not in block


def test_sklearn_model_on_synthetic_inputs(tmp_path) -> None:
    model, _ = models.sklearn_mlp()
    block = _job(tmp_path, model, {"bits": 4})["fidelity"]
    assert block["inputs"] == "synthetic" and math.isfinite(block["output_sqnr_db"])
    assert block["class_outputs"] == ["probabilities"] and 0 <= block["agreement"] <= 1


def test_a_bad_layer_is_named_in_the_warning(tmp_path) -> None:
    model = models.mlp((16, 48, 48, 48, 10), seed=2)
    spec = {"bits": 8, "overrides": [{"match": r"^fc2\.weight$", "bits": 2}]}
    report = _job(tmp_path, model, spec, limits=JobLimits(fidelity_min_sqnr_db=45.0))
    block = report["fidelity"]
    assert block["output_sqnr_db"] < 45
    costs = block["layers"]
    assert costs["measured"] == costs["of"] == 4
    assert costs["costliest"][0]["name"] == "fc2.weight"
    (warning,) = report["warnings"]
    assert "under 45 dB" in warning and warning.index("fc2.weight") < warning.index("fc0")
    assert "give an evaluation set" in warning  # synthetic inputs may misstate it
    x = np.random.default_rng(1).normal(size=(24, 16)).astype(np.float32)
    np.savez(tmp_path / "set.npz", x=x)
    measured = _job(tmp_path, model, spec, tmp_path / "set.npz",
                    limits=JobLimits(fidelity_min_sqnr_db=45.0))  # fmt: skip
    (on_data,) = [w for w in measured["warnings"] if "output SQNR" in w]
    assert "on dataset inputs" in on_data and "give an evaluation set" not in on_data


def _reciprocal_model(column: np.ndarray) -> onnx.ModelProto:
    """``y = 1 / (x @ W)``: ``W``'s first column large, its second ``column``. At 4 bits on
    one scale for the tensor, a column of small weights rounds to zeros and its outputs to
    inf; a column of zeros makes the float model's outputs inf already."""
    weights = np.stack([np.linspace(500.0, 1000.0, 16), column], axis=1).astype(np.float32)
    nodes = [onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
             onnx.helper.make_node("Reciprocal", ["h"], ["y"])]  # fmt: skip
    graph = onnx.helper.make_graph(
        nodes, "reciprocal",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


# One scale for the tensor, a zero level at 0: the small column rounds to exact zeros.
SMALL_LAYER = {"bits": 4, "granularity": "layer", "rounding": "midtread", "normalize": False,
               "min_elements": 1, "calibration": "none"}  # fmt: skip


def test_outputs_that_quantization_makes_infinite_warn(tmp_path) -> None:
    # Such a job used to fail ("math domain error": log10 of signal / inf) or, with NaN
    # outputs, pass without a warning (a NaN SQNR is null in JSON and is under nothing).
    column = np.linspace(0.01, 0.02, 16)
    report = _job(tmp_path, _reciprocal_model(column), SMALL_LAYER)
    block = report["fidelity"]
    assert block["inputs"] == "synthetic" and block["output_sqnr_db"] is None
    (warning,) = report["warnings"]
    assert "the quantized model's outputs hold" in warning and "NaN or infinite" in warning
    assert block["layers"]["costliest"][0] == {"name": "w", "output_sqnr_db": None}
    assert "w (outputs not finite alone)" in warning


def test_a_float_model_whose_outputs_are_infinite_says_so(tmp_path) -> None:
    report = _job(tmp_path, _reciprocal_model(np.zeros(16)), SMALL_LAYER)
    assert report["fidelity"]["output_sqnr_db"] is None
    (warning,) = report["warnings"]
    assert "the float model's own outputs hold" in warning and "cannot be measured" in warning


def test_weights_only_inputs_have_no_fidelity(tmp_path) -> None:
    path = tmp_path / "weights.npz"
    write_npz(path, [("w", np.random.default_rng(0).laplace(size=(64, 32)).astype(np.float32))])
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 4})
    block = run_job(job, tmp_path / "out").report["fidelity"]
    assert block["inputs"] is None and block["output_sqnr_db"] is None
    assert "weights only" in block["reason"]


def test_a_model_that_rejects_synthetic_inputs_says_why(tmp_path) -> None:
    model = models.mlp((16, 10))
    model.graph.input[0].type.tensor_type.shape.dim[1].ClearField("dim_value")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "features"
    block = _job(tmp_path, model, {"bits": 8})["fidelity"]
    assert block["inputs"] is None and "rejected" in block["reason"]


@pytest.mark.parametrize("build", [models.cnn, lambda: models.with_constant_nodes(models.cnn()),
                                   models.if_model])  # fmt: skip
def test_attribution_measures_weights_wherever_they_are(tmp_path, build) -> None:
    model = build()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3}))
    found = synthetic_set(model)
    feeds, _ = next(iter(found.batches(found.batch)))
    costs = layer_costs(path, qmodel.weights, feeds, deadline=math.inf)
    assert costs.measured == costs.total == len(qmodel.weights)
    values = [c.output_sqnr_db for c in costs.costs]
    assert values == sorted(values) and values[0] < 60
    # An If branch the batch never takes costs nothing: its layer scores +inf (null in JSON).
    assert all(math.isfinite(v) for v in values) or build is models.if_model


def test_attribution_stops_at_the_deadline(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(models.cnn(), str(path))
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3}))
    feeds, _ = next(iter(synthetic_set(models.cnn()).batches(4)))
    costs = layer_costs(path, qmodel.weights, feeds, deadline=0.0)
    assert costs.measured == 0 and costs.total == len(qmodel.weights)


def test_attribution_on_two_threads_measures_what_one_does(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(models.cnn(), str(path))
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3}))
    feeds, _ = next(iter(synthetic_set(models.cnn()).batches(4)))
    found = {}
    for workers in (1, 2):
        found[workers] = layer_costs(path, qmodel.weights, feeds, deadline=math.inf,
                                     threads=workers)  # fmt: skip
    assert found[2].costs == found[1].costs and found[2].measured == len(qmodel.weights)
    assert len({c.output_sqnr_db for c in found[2].costs}) > 1  # distinct layers, distinct costs


@pytest.mark.parametrize("link", [None, "hard", "symbolic"])
def test_attribution_reads_large_weights_from_any_model_file(tmp_path, link) -> None:
    """Layers of 128 KiB, left in the model file when it is read: measured the same from the
    file itself, a second hard link to it or a symbolic link (which onnxruntime will not read
    as external data: the session then holds the weights)."""
    model = models.mlp((64, 512, 96, 10), seed=3)
    source = tmp_path / "source.onnx"
    onnx.save(model, str(source))
    path = source
    if link is not None:
        path = tmp_path / "linked.onnx"
        path.hardlink_to(source) if link == "hard" else path.symlink_to(source)
    qmodel = quantize_model(load_model(source), QuantSpec.from_dict({"bits": 3}))
    feeds, _ = next(iter(synthetic_set(model).batches(8)))
    costs = layer_costs(path, qmodel.weights, feeds, deadline=math.inf)
    reference = layer_costs(source, qmodel.weights, feeds, deadline=math.inf)
    assert costs.costs == reference.costs and costs.measured == len(qmodel.weights) == 3
    assert all(math.isfinite(c.output_sqnr_db) for c in costs.costs)
