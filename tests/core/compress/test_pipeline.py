"""The quantize job end to end: every kind of model read, quantized, written, run and compared.

For each model, ``model.onnx`` runs in onnxruntime with the original inputs and outputs; the
weights it decodes equal the core's dequantized weights exactly; its outputs equal those of the
float model with the dequantized weights put in (relative tolerance 1e-5); and ``model.qpack``
unpacks to ``model.onnx`` byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from quantcore import JobInput, JobKind, JobOutput, Stage, run_job
from quantcore.coding.entropy import empirical_entropy_bits
from quantcore.compress.pipeline import build_onnx, package, package_size, quantize_model
from quantcore.errors import InvalidDatasetError, InvalidModelError, NoWeightsError
from quantcore.formats.load import load_model
from quantcore.formats.qpack import skeleton, unpack, unpack_file
from quantcore.formats.weights_io import read_npz, read_safetensors, write_npz, write_safetensors
from quantcore.spec import QuantSpec
from tests import models
from tests.core.formats.onnx_helpers import exposing, run, with_weights

RNG = np.random.default_rng(11)
REPORT_KEYS = {"model", "spec", "summary", "layers", "skipped", "distribution", "accuracy",
               "runnable", "fidelity", "warnings",
               "timings"}  # fmt: skip


def _job(path: Path, out: Path, spec: dict, dataset: Path | None = None) -> JobOutput:
    """A job with plain rounding unless ``spec`` says otherwise: these checks rebuild its
    codes from the spec alone (calibration has tests of its own)."""
    spec = {"calibration": "none", **spec}
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec=spec, dataset_path=dataset)
    return run_job(job, out)


def _verify_onnx(
    float_model: onnx.ModelProto, path: Path, out: JobOutput, feeds: dict[str, np.ndarray]
) -> None:
    """The checks of the module docstring, on a finished job."""
    written = onnx.load(out.artifacts[0])
    onnx.checker.check_model(written)
    assert [i.name for i in written.graph.input] == [i.name for i in float_model.graph.input]
    assert [o.name for o in written.graph.output] == [o.name for o in float_model.graph.output]
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict(out.report["spec"]))
    source = qmodel.source
    values = {source.sources[w.name].value_name: w.dequantized() for w in qmodel.weights}
    names = list(values)
    n_out = len(float_model.graph.output)
    # Only top-level values can be graph outputs; subgraph weights are checked by the outputs.
    top = {i.name for i in float_model.graph.initializer} | {
        n.output[0] for n in float_model.graph.node if n.op_type == "Constant"
    }
    shown = [n for n in names if n in top]
    got = run(exposing(written, shown), feeds)
    for name, value in zip(shown, got[n_out:], strict=True):
        np.testing.assert_array_equal(value, values[name].astype(value.dtype))
    reference = with_weights(float_model, values)
    for a, b in zip(got[:n_out], run(reference, feeds), strict=True):
        if a.dtype.kind == "f":
            tol = 4e-3 if a.dtype == np.float16 else 1e-5
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol / 10)
        else:
            np.testing.assert_array_equal(a, b)
    package = out.artifacts[1].read_bytes()
    assert unpack(package)[1] == out.artifacts[0].read_bytes()
    assert len(package) == package_size(qmodel)
    _verify_report(out.report)


def _verify_report(report: dict) -> None:
    assert set(report) == REPORT_KEYS
    json.dumps(report, allow_nan=False)
    summary = report["summary"]
    assert summary["quantized_tensors"] == len(report["layers"]) > 0
    assert summary["skipped_tensors"] == len(report["skipped"])
    assert set(summary["artifacts"]) >= {"model.qpack"}
    timings = report["timings"]
    assert set(timings) == {"load_s", "quantize_s", "evaluate_s", "fidelity_s",
                            "write_s", "report_s", "total_s"}
    assert 0 < timings["report_s"] < timings["total_s"]


X16 = {"x": RNG.normal(size=(6, 16)).astype(np.float32)}
IMAGES = {"x": RNG.normal(size=(2, 3, 12, 12)).astype(np.float32)}

MODELS = {
    "mlp": (lambda: models.mlp(), X16),
    "mlp-opset21": (lambda: models.mlp(opset=21), X16),
    "cnn": (lambda: models.cnn(), IMAGES),
    "constants": (lambda: models.with_constant_nodes(models.cnn()), IMAGES),
    "if-then": (lambda: models.if_model(), {"x": np.abs(RNG.normal(size=(4, 8)))}),
    "if-else": (lambda: models.if_model(), {"x": -np.abs(RNG.normal(size=(4, 8)))}),
    "loop-if": (lambda: models.loop_model(), {"x": -np.abs(RNG.normal(size=(4, 8)))}),
    "float16": (lambda: models.with_dtype(models.mlp(), TensorProto.FLOAT16), X16),
    "float64": (lambda: models.with_dtype(models.mlp(use_matmul=True), TensorProto.DOUBLE), X16),
    "partly-quantized": (lambda: models.partly_quantized(), X16),
}


@pytest.mark.parametrize("spec", [{"bits": 3}, {"bits": 4, "granularity": "channel"}])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_quantize_and_run(tmp_path, name, spec):
    build, feeds = MODELS[name]
    model = build()
    feeds = {
        k: v.astype(
            onnx.helper.tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type)
        )
        for k, v in feeds.items()
    }
    path = tmp_path / "in.onnx"
    onnx.save(model, path)
    out = _job(path, tmp_path / "out", spec)
    _verify_onnx(model, path, out, feeds)


@pytest.mark.parametrize(
    "spec",
    [
        {"method": "deadzone", "bits": 3},
        {"method": "mulaw", "bits": 4},
        {"method": "log", "bits": 3},
        {"method": "float", "exponent_bits": 2, "mantissa_bits": 1},
        {"method": "uniform", "bits": 8, "rounding": "midtread", "granularity": "model"},
        {"method": "uniform", "bits": 12, "entropy_coding": False},
        {"method": "mulaw", "bits": 4, "granularity": "channel"},
    ],
)
def test_every_method_on_the_cnn(tmp_path, spec):
    model = models.cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    _verify_onnx(model, path, _job(path, tmp_path / "out", spec), IMAGES)


def test_external_data_model(tmp_path):
    model = models.cnn()
    path = models.save_external(model, tmp_path / "in")
    out = _job(path, tmp_path / "out", {"bits": 4})
    _verify_onnx(model, path, out, IMAGES)
    assert out.report["summary"]["original_bytes"] > path.stat().st_size


@pytest.mark.slow
def test_sklearn_mlp_with_evaluation(tmp_path):
    model, images = models.sklearn_mlp()
    path = tmp_path / "digits.onnx"
    onnx.save(model, path)
    labels = np.asarray(run(model, {"X": images})[0], np.int64)  # the float model's own predictions
    dataset = tmp_path / "digits.npz"
    np.savez(dataset, X=images[:300], labels=labels[:300])
    out = _job(path, tmp_path / "out", {"bits": 4}, dataset)
    _verify_onnx(model, path, out, {"X": images[:50]})
    accuracy = out.report["accuracy"]
    assert accuracy["samples"] == 300
    assert accuracy["fp32"]["top1"] == 1.0
    assert accuracy["agreement"] > 0.8
    written = onnx.load(out.artifacts[0])
    # opset 21: 4-bit codes are stored as int4.
    # The default: groups with a zero point, unsigned codes.
    assert {i.data_type for i in written.graph.initializer if i.name.endswith(".c")} == {
        TensorProto.UINT4
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_only_models(tmp_path, suffix):
    arrays = {
        "encoder.weight": RNG.laplace(size=(128, 64)).astype(np.float32),
        "encoder.bias": RNG.normal(size=128).astype(np.float32),
        "norm.weight": np.ones(64, np.float32),
        "head.weight": RNG.laplace(size=(10, 128)).astype(np.float16),
        "positions": np.arange(10),
    }
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        write_safetensors(path, arrays.items(), {"format": "pt", "source": "tests"})
    else:
        write_npz(path, arrays.items())
    out = _job(path, tmp_path / "out", {"bits": 3, "granularity": "channel"})
    assert [p.name for p in out.artifacts] == [
        f"model{suffix}",
        "model.qpack",
        "report.json",
        "report.html",
    ]
    read = read_safetensors if suffix == ".safetensors" else read_npz
    written = read(out.artifacts[0])
    assert [t.name for t in written.tensors] == list(arrays)
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict(out.report["spec"]))
    for weight in qmodel.weights:
        expected = weight.dequantized().astype(arrays[weight.name].dtype)
        np.testing.assert_array_equal(written.array(weight.name), expected)
    np.testing.assert_array_equal(written.array("encoder.bias"), arrays["encoder.bias"])
    np.testing.assert_array_equal(written.array("positions"), arrays["positions"])
    assert {s["name"]: s["reason"] for s in out.report["skipped"]}["norm.weight"].startswith(
        "normalisation"
    )
    restored = tmp_path / f"restored{suffix}"
    unpack_file(out.artifacts[1], restored)
    assert restored.read_bytes() == out.artifacts[0].read_bytes()
    _verify_report(out.report)


def test_progress_runs_through_the_stages(tmp_path):
    path = tmp_path / "cnn.onnx"
    onnx.save(models.cnn(), path)
    seen: list[tuple[Stage, float]] = []
    job = JobInput(kind=JobKind.QUANTIZE, model_path=path, spec={"bits": 3})
    run_job(job, tmp_path / "out", progress=lambda s, f: seen.append((s, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert [s for s, _ in seen][:1] == [Stage.LOADING]
    assert Stage.QUANTIZING in {s for s, _ in seen}


def test_bad_inputs_fail_with_domain_errors(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(InvalidModelError):
        _job(text, tmp_path / "a", {})
    tiny = tmp_path / "tiny.onnx"
    onnx.save(models.mlp(sizes=(2, 3, 2)), tiny)
    with pytest.raises(NoWeightsError):
        _job(tiny, tmp_path / "b", {})
    weights = tmp_path / "w.npz"
    write_npz(weights, [("w", np.ones((4, 4), np.float32))])
    dataset = tmp_path / "d.npz"
    np.savez(dataset, x=np.ones((2, 4), np.float32))
    with pytest.raises(InvalidDatasetError, match="weights only"):
        _job(weights, tmp_path / "c", {}, dataset)


def test_model_past_the_inline_limit_uses_external_data(tmp_path, monkeypatch):
    # The 2 GB limit, scaled down so that the CNN crosses it.
    monkeypatch.setattr("quantcore.formats.onnx_writer.MAX_INLINE_BYTES", 2048)
    model = models.cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    # 8-bit codes: the CNN's 4-bit ones are all under the 1 KiB that goes to external data.
    out = _job(path, tmp_path / "out", {"bits": 8})
    names = [p.name for p in out.artifacts]
    assert names[:3] == ["model.onnx", "model.onnx.data", "model.qpack"]
    written = tmp_path / "out" / "model.onnx"
    got = run(onnx.load(written), IMAGES)  # onnx.load reads the external data next to it
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict(out.report["spec"]))
    values = {w.name: w.dequantized() for w in qmodel.weights}
    np.testing.assert_allclose(got[0], run(with_weights(model, values), IMAGES)[0], rtol=1e-5)
    restored = tmp_path / "restored" / "model.onnx"
    restored.parent.mkdir()
    files = unpack_file(tmp_path / "out" / "model.qpack", restored)
    assert [f.name for f in files] == ["model.onnx", "model.onnx.data"]
    for name in ("model.onnx", "model.onnx.data"):
        assert (restored.parent / name).read_bytes() == (tmp_path / "out" / name).read_bytes()


def test_package_size_of_a_real_job_is_near_the_entropy(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(models.mlp(sizes=(256, 512, 512, 10)), path)
    qmodel = quantize_model(load_model(path), QuantSpec.from_dict({"bits": 3}))
    written = build_onnx(qmodel)
    bits = sum(
        empirical_entropy_bits(w.codes.astype(np.int64) - w.code_min) * w.codes.size
        for w in qmodel.weights
    )
    ideal = bits / 8 + len(skeleton(written))
    size = len(package(qmodel, written).data)
    assert size <= 1.03 * ideal


def test_overrides_change_one_tensor(tmp_path):
    model = models.cnn()
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    spec = {"bits": 3, "overrides": [{"match": "^head", "bits": 8, "method": "mulaw"}]}
    out = _job(path, tmp_path / "out", spec)
    layers = {row["name"]: row for row in out.report["layers"]}
    assert (layers["head.weight"]["bits"], layers["head.weight"]["method"]) == (8, "mulaw")
    assert (layers["conv1.weight"]["bits"], layers["conv1.weight"]["method"]) == (3, "uniform")
    _verify_onnx(model, path, out, IMAGES)
