"""Search jobs on seed 001's MLP (digits): the smallest package within a 1% top-1 drop."""

from __future__ import annotations

import numpy as np
import pytest

from quantcore import JobInput, JobKind, JobLimits, run_job
from quantcore.errors import InvalidDatasetError
from quantcore.evaluate import check_dataset, evaluate
from tests.digits_mlp import DigitsMLP, cache_dir, digits_mlp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(request, tmp_path_factory) -> DigitsMLP:
    return digits_mlp(cache_dir(request, tmp_path_factory))


SPEC = {
    "base": {"method": "uniform", "granularity": "layer"},
    "max_top1_drop": 0.01,
    "candidates": {"bits": [2, 3, 4, 6, 8]},
}


def _search(digits: DigitsMLP, spec: dict) -> JobInput:
    """A search job on the digits MLP with its labelled evaluation set."""
    return JobInput(
        kind=JobKind.SEARCH,
        model_path=digits.model_path,
        spec=spec,
        dataset_path=digits.dataset_path,
    )


def test_search_finds_the_smallest_package_within_the_budget(digits, tmp_path):
    job = _search(digits, SPEC)
    out = run_job(job, tmp_path, limits=JobLimits(max_sweep_points=16))
    report = out.report
    path = report["path"]
    assert report["criterion"] == "top1" and report["met_budget"] is True
    candidates = [s for s in path if s["action"] == "candidate"]
    assert [s["point"]["bits"] for s in candidates] == [2, 3, 4, 6, 8]
    chosen = next(s for s in path if s["chosen"])
    assert chosen["within_budget"] and chosen["accuracy"]["top1_drop"] <= 0.01
    within = [s for s in path if s["within_budget"]]
    assert chosen["package_bytes"] == min(s["package_bytes"] for s in within)
    assert all(s["within_budget"] == (s["drop"] <= 0.01) for s in path)
    assert candidates[-1]["within_budget"]  # 8 bits keeps the float model's accuracy
    # Mixed precision: first every layer of the best uniform candidate is probed one bit lower.
    best_uniform = min(
        (s for s in candidates if s["within_budget"]), key=lambda s: s["package_bytes"]
    )
    width = best_uniform["point"]["bits"]
    first_round = path[len(candidates) : len(candidates) + len(report["layers"])]
    assert len(report["layers"]) == 3
    for step, layer in zip(first_round, sorted(r["name"] for r in report["layers"]), strict=True):
        assert step["action"] == f"sensitivity of {layer} at {width - 1} bits"
        assert step["point"] == {"layer_bits": {layer: width - 1}}
    assert chosen["package_bytes"] <= best_uniform["package_bytes"]
    # The chosen spec reaches its layers through overrides; the report shows their widths.
    lowered = chosen["point"].get("layer_bits", {})
    assert {r["name"]: r["bits"] for r in report["layers"]} == {
        r["name"]: lowered.get(r["name"], width) for r in report["layers"]
    }
    # The artifacts are the chosen configuration: run model.onnx independently.
    names = {p.name for p in out.artifacts}
    assert {"model.onnx", "model.qpack", "report.json", "report.html"} <= names
    # Written as a quantize job writes it, its spool gone: the folder holds the artifacts, and
    # the package's size is the one the chosen step measured.
    assert {p.name for p in tmp_path.iterdir()} == names
    assert (tmp_path / "model.qpack").stat().st_size == chosen["package_bytes"]
    again = evaluate(
        digits.model_path,
        tmp_path / "model.onnx",
        check_dataset(digits.model_path, digits.dataset_path),
        batch_size=128,
    )
    assert again.top1_drop == pytest.approx(chosen["accuracy"]["top1_drop"])
    assert report["chosen_spec"] == chosen["spec"]
    page = (tmp_path / "report.html").read_text()
    assert "class=chosen" in page


def test_without_labels_the_budget_bounds_disagreement(digits, tmp_path):
    x = np.load(digits.dataset_path)["X"]
    unlabeled = tmp_path / "x.npz"
    np.savez(unlabeled, X=x)
    spec = {**SPEC, "candidates": {"bits": [3, 8]}, "mixed_precision": False}
    job = JobInput(
        kind=JobKind.SEARCH, model_path=digits.model_path, spec=spec, dataset_path=unlabeled
    )
    report = run_job(job, tmp_path / "out").report
    assert report["criterion"] == "agreement"
    for step in report["path"]:
        assert step["drop"] == pytest.approx(1.0 - step["accuracy"]["agreement"])
        assert step["accuracy"]["top1_drop"] is None


def test_an_unreachable_budget_returns_the_closest_and_says_so(digits, tmp_path):
    spec = {
        "base": {"granularity": "model"},
        "max_top1_drop": 0.0,
        "candidates": {"bits": [1], "support": ["jayant", "max_abs"]},
    }
    job = _search(digits, spec)
    report = run_job(job, tmp_path).report
    assert report["met_budget"] is False
    chosen = next(s for s in report["path"] if s["chosen"])
    assert chosen["drop"] == min(s["drop"] for s in report["path"])


def test_a_search_needs_a_dataset(digits, tmp_path):
    job = JobInput(kind=JobKind.SEARCH, model_path=digits.model_path, spec=SPEC)
    with pytest.raises(InvalidDatasetError, match="needs an evaluation dataset"):
        run_job(job, tmp_path)


def test_mixed_precision_goes_down_several_bits_in_rounds(digits, tmp_path):
    spec = {**SPEC, "candidates": {"bits": [4]}}
    job = _search(digits, spec)
    report = run_job(job, tmp_path, limits=JobLimits(max_sweep_points=40)).report
    chosen = next(s for s in report["path"] if s["chosen"])
    assert chosen["within_budget"] and not report["stopped_at_limit"]
    # From 4 bits everywhere, rounds of one bit take some layer down to 2 bits or fewer.
    assert min(chosen["point"]["layer_bits"].values()) <= 2
    assert chosen["package_bytes"] < 0.7 * report["path"][0]["package_bytes"]
    assert any(" at 2 bits" in s["action"] for s in report["path"])


def test_the_search_stops_at_the_evaluation_cap_and_says_so(digits, tmp_path):
    spec = {**SPEC, "candidates": {"bits": [4]}}
    job = _search(digits, spec)
    report = run_job(job, tmp_path, limits=JobLimits(max_sweep_points=3)).report
    assert report["stopped_at_limit"] is True and len(report["path"]) == 3
    assert sum(s["chosen"] for s in report["path"]) == 1
