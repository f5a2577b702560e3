"""Sweep jobs through ``run_job``: a real model quantized at every grid point and evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from quantcore import JobInput, JobKind, JobLimits, Stage, run_job, validate_job
from quantcore.errors import InvalidDatasetError, InvalidSpecError
from tests.models import mlp

LIMITS = JobLimits()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sweep")
    model = mlp((16, 64, 48, 10), seed=3)
    model_path = folder / "model.onnx"
    onnx.save(model, model_path)
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = sess.run(None, {"x": x})[0].argmax(1)  # fp32 top-1 is exactly 1.0
    dataset_path = folder / "eval.npz"
    np.savez(dataset_path, x=x, labels=labels)
    return model_path, dataset_path


def _sweep(files, tmp_path, spec, *, dataset=True, progress=None, limits=LIMITS):
    model_path, dataset_path = files
    job = JobInput(
        kind=JobKind.SWEEP,
        model_path=model_path,
        spec=spec,
        dataset_path=dataset_path if dataset else None,
    )
    return run_job(job, tmp_path / "out", progress, limits)


def test_a_bits_sweep_gives_one_row_per_point_with_rising_sqnr(files, tmp_path):
    stages: list[tuple[Stage, float]] = []
    out = _sweep(
        files,
        tmp_path,
        {"base": {"granularity": "layer"}, "grid": {"bits": [2, 4, 8]}},
        progress=lambda s, f: stages.append((s, f)),
    )
    rows = out.report["rows"]
    assert [r["point"] for r in rows] == [{"bits": 2}, {"bits": 4}, {"bits": 8}]
    assert [r["bits_per_weight"] for r in rows] == [2.0, 4.0, 8.0]
    sqnr = [r["sqnr_db"] for r in rows]
    assert sqnr[0] < sqnr[1] < sqnr[2]
    # About 6 dB per bit at high rate: 4 more bits give well over 18 dB.
    assert sqnr[2] - sqnr[1] > 18.0
    sizes = [r["package_bytes"] for r in rows]
    assert sizes[0] < sizes[1] < sizes[2]
    assert all(r["entropy_bits_per_weight"] <= r["bits_per_weight"] + 1e-9 for r in rows)
    agreement = [r["accuracy"]["agreement"] for r in rows]
    # Random inputs put some samples near a tie between classes: even 8 bits flips a few.
    assert agreement[0] < agreement[1] <= agreement[2] and agreement[2] >= 0.97
    assert rows[2]["accuracy"]["quantized"]["top1"] == agreement[2]  # labels = fp32's top-1
    assert rows[0]["spec"]["bits"] == 2 and rows[0]["spec"]["support"] == "jayant"
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.95
    assert {s for s, _ in stages} == {
        Stage.LOADING, Stage.QUANTIZING, Stage.EVALUATING, Stage.WRITING
    }  # fmt: skip
    names = sorted(p.name for p in out.artifacts)
    assert names == ["report.html", "report.json"]
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["rows"] == rows and on_disk["kind"] == "sweep"


def test_threshold_rows_carry_the_threshold_and_theory(files, tmp_path):
    out = _sweep(
        files,
        tmp_path,
        {
            "base": {"granularity": "layer", "support": "value"},
            "grid": {"bits": [3], "support_value": [1.5, 2.9236, 5.0]},
        },
        dataset=False,
    )
    rows = out.report["rows"]
    assert [r["xmax"] for r in rows] == pytest.approx([1.5, 2.9236, 5.0])
    assert all(r["accuracy"] is None for r in rows)
    # 001's table 2: 3-bit midrise at the Jayant threshold, unit-variance Laplacian: 11.4419 dB
    # (each layer normalised to unit variance, so every layer's theory is that figure).
    assert rows[1]["sqnr_theory_db"] == pytest.approx(11.4419, abs=1e-3)
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<svg ") == 2  # threshold figure, rate-distortion


def test_bad_sweeps_fail_before_any_work(files, tmp_path):
    with pytest.raises(InvalidSpecError, match="the sweep has no points"):
        _sweep(files, tmp_path, {"base": {}, "grid": {}})
    with pytest.raises(InvalidSpecError, match="more than the limit of 2"):
        _sweep(files, tmp_path, {"grid": {"bits": [2, 3, 4]}}, limits=JobLimits(max_sweep_points=2))
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 15), np.float32))
    job = JobInput(
        kind=JobKind.SWEEP, model_path=files[0], spec={"grid": {"bits": [2]}}, dataset_path=bad
    )
    with pytest.raises(InvalidDatasetError, match="dimension 1 is 15"):
        run_job(job, tmp_path / "out2")


def test_validate_job_gives_the_sweep_and_search_to_store():
    applied = validate_job(
        JobKind.SWEEP, {"base": {"support": "value"}, "grid": {"support_value": [1, 2]}}
    )
    assert applied == {"base": {"support": "value"}, "grid": {"support_value": [1, 2]}}
    with pytest.raises(InvalidSpecError, match="needs a support that takes a value"):
        validate_job(JobKind.SWEEP, {"grid": {"support_value": [1.0]}})
    search = validate_job(JobKind.SEARCH, {"candidates": {"bits": [2, 4]}})
    assert search["max_top1_drop"] == 0.01 and search["mixed_precision"] is True
    with pytest.raises(InvalidSpecError, match="max_top1_drop=2 must be a fraction"):
        validate_job(JobKind.SEARCH, {"max_top1_drop": 2})


def test_validate_job_applies_the_services_limit():
    spec = {"grid": {"bits": [2, 3, 4]}}
    assert validate_job(JobKind.SWEEP, spec, JobLimits(max_sweep_points=3)) == {
        "base": {}, "grid": {"bits": [2, 3, 4]}}
    with pytest.raises(InvalidSpecError, match="more than the limit of 2"):
        validate_job(JobKind.SWEEP, spec, JobLimits(max_sweep_points=2))


STORED_SPECS = [
    (JobKind.QUANTIZE, {}),
    (JobKind.QUANTIZE, {"bits": 3, "include": ["fc"], "overrides": [{"match": "fc2", "bits": 8}]}),
    (JobKind.SWEEP, {"grid": {"bits": [2, 3]}}),
    (JobKind.SWEEP, {"base": {"granularity": "layer"},
                     "grid": {"support": ["jayant", "value"], "support_value": [1.0, 2.0]}}),
    (JobKind.SEARCH, {}),
    (JobKind.SEARCH, {"base": {"method": "deadzone"}, "candidates": {"bits": [2, 4]},
                      "max_top1_drop": 0.05, "mixed_precision": False}),
]


@pytest.mark.parametrize(("kind", "spec"), STORED_SPECS)
def test_the_stored_spec_is_taken_back_unchanged(kind, spec):
    """What the API stores is what the worker parses: validating it again gives it again."""
    from quantcore.explore.grid import parse_sweep
    from quantcore.explore.search import parse_search
    from quantcore.spec import QuantSpec

    stored = validate_job(kind, spec)
    assert validate_job(kind, stored) == stored
    parse = {JobKind.QUANTIZE: lambda s, _: QuantSpec.from_dict(s), JobKind.SWEEP: parse_sweep,
             JobKind.SEARCH: parse_search}[kind]
    parse(stored, JobLimits())  # the worker's parser, as run_job calls it


def test_a_search_without_a_dataset_is_refused_when_known():
    assert validate_job(JobKind.SEARCH, {}, with_dataset=True)["max_top1_drop"] == 0.01
    with pytest.raises(InvalidDatasetError, match="needs an evaluation dataset"):
        validate_job(JobKind.SEARCH, {}, with_dataset=False)
    assert validate_job(JobKind.SWEEP, {"grid": {"bits": [2]}}, with_dataset=False)


def test_a_grid_too_large_to_list_is_counted_not_expanded():
    many = list(range(1000))
    spec = {"grid": {"bits": many, "deadzone_ratio": many, "rounding": many,
                     "method": many, "granularity": many}}
    with pytest.raises(InvalidSpecError, match="1000000000000000 points, more than the limit"):
        validate_job(JobKind.SWEEP, spec)
    with pytest.raises(InvalidSpecError, match="search's candidates has 1000000000000000 points"):
        validate_job(JobKind.SEARCH, {"candidates": spec["grid"]})
    with pytest.raises(InvalidSpecError):  # an unhashable support is refused, not a TypeError
        validate_job(JobKind.SWEEP, {"grid": {"support": [["value"]], "support_value": [1]}})


def test_weights_only_models_sweep_without_a_dataset_and_refuse_one(tmp_path):
    rng = np.random.default_rng(0)
    weights = tmp_path / "weights.npz"
    np.savez(weights, **{"enc.weight": rng.laplace(size=(128, 64)).astype(np.float32)})
    job = JobInput(kind=JobKind.SWEEP, model_path=weights, spec={"grid": {"bits": [2, 4]}})
    rows = run_job(job, tmp_path / "out").report["rows"]
    assert rows[0]["sqnr_db"] < rows[1]["sqnr_db"] and rows[0]["accuracy"] is None
    dataset = tmp_path / "d.npz"
    np.savez(dataset, x=np.zeros((3, 64), np.float32))
    with_dataset = JobInput(
        kind=JobKind.SWEEP, model_path=weights, spec={"grid": {"bits": [2]}}, dataset_path=dataset
    )
    with pytest.raises(InvalidDatasetError, match="holds weights only"):
        run_job(with_dataset, tmp_path / "out2")


def test_a_grid_over_methods_and_granularities(files, tmp_path):
    out = _sweep(
        files,
        tmp_path,
        {
            "base": {"bits": 4},
            "grid": {"method": ["uniform", "deadzone", "log"], "granularity": ["layer", "channel"]},
        },
    )
    rows = out.report["rows"]
    assert [(r["point"]["method"], r["point"]["granularity"]) for r in rows] == [
        ("uniform", "layer"), ("uniform", "channel"), ("deadzone", "layer"),
        ("deadzone", "channel"), ("log", "layer"), ("log", "channel"),
    ]  # fmt: skip
    by = {(r["spec"]["method"], r["spec"]["granularity"]): r for r in rows}
    # Closed-form theory exists for the uniform families, not for the exponential one.
    assert by[("uniform", "layer")]["sqnr_theory_db"] is not None
    assert by[("log", "layer")]["sqnr_theory_db"] is None
    for row in rows:
        assert 10.0 < row["sqnr_db"] < 30.0 and row["accuracy"]["agreement"] > 0.7
        assert row["entropy_bits_per_weight"] <= 4.0 + 1e-9
    # The dead zone empties the levels next to zero: fewer bits per weight after coding.
    assert (
        by[("deadzone", "layer")]["entropy_bits_per_weight"]
        < by[("uniform", "layer")]["entropy_bits_per_weight"]
    )


def test_a_point_is_what_a_quantize_job_of_its_spec_writes(files, tmp_path):
    """Each point is written as a quantize job streams it, in a folder of its own that goes
    with the point: its package is the job's model.qpack byte for byte (its size in the row),
    its accuracy the job's, and the sweep's folder keeps only its reports."""
    model_path, dataset_path = files
    spec = {"bits": 4, "granularity": "channel"}
    seen: set[str] = set()  # what the point's folder holds while the model is evaluated

    def watch(stage: Stage, _: float) -> None:
        if stage is Stage.EVALUATING:
            seen.update(p.name for p in (tmp_path / "out").glob(".point-*/out/*"))

    swept = _sweep(files, tmp_path, {"base": spec, "grid": {"bits": [4]}}, progress=watch)
    assert seen == {"model.onnx", "model.qpack"}
    row = swept.report["rows"][0]
    job = JobInput(kind=JobKind.QUANTIZE, model_path=model_path, spec=spec,
                   dataset_path=dataset_path)  # fmt: skip
    quantized = run_job(job, tmp_path / "quantize", None, LIMITS)
    assert row["package_bytes"] == (tmp_path / "quantize" / "model.qpack").stat().st_size
    assert row["accuracy"]["agreement"] == quantized.report["accuracy"]["agreement"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html",
                                                                   "report.json"]
