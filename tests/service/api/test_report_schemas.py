"""Reports the core writes validate against the report schemas published in openapi/openapi.json.

Each job kind runs for real (the digits MLP with its labelled evaluation set; a weights-only
``.npz`` without a dataset); its report is checked against its own component schema and
against the schema of ``GET /v1/jobs/{job_id}/report``'s 200 answer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from quantcore import JobInput, JobKind, JobLimits, run_job
from tests.digits_mlp import DigitsMLP, cache_dir, digits_mlp

COMMITTED = Path(__file__).resolve().parents[3] / "openapi" / "openapi.json"
DOCUMENT_URI = "urn:quantserve:openapi.json"
REPORT_PATH = "/v1/jobs/{job_id}/report"
KINDS = ("QuantizeReport", "SweepReport", "SearchReport")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


@pytest.fixture(scope="module")
def registry(document: dict[str, Any]) -> Registry:
    """The OpenAPI document as a schema resource, so its ``#/components/...`` refs resolve."""
    return Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))


def _validator(registry: Registry, ref: str) -> Draft202012Validator:
    """A validator for the schema at ``ref`` (``#/...``) in the document."""
    return Draft202012Validator({"$ref": DOCUMENT_URI + ref}, registry=registry)


def _route_ref(document: dict[str, Any]) -> str:
    answer = document["paths"][REPORT_PATH]["get"]["responses"]["200"]
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    assert isinstance(ref, str)
    return ref


def _errors(registry: Registry, ref: str, report: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator(registry, ref).iter_errors(report)
    ]


def _check(document: dict[str, Any], registry: Registry, kind: str, report: dict[str, Any]):
    """``report`` (as stored: through JSON) is valid for its kind and for the route."""
    stored = json.loads(json.dumps(report, allow_nan=False))
    for ref in (f"#/components/schemas/{kind}", _route_ref(document)):
        errors = _errors(registry, ref, stored)
        assert not errors, f"{ref}:\n" + "\n".join(errors[:20])


@pytest.fixture(scope="module")
def digits(request, tmp_path_factory) -> DigitsMLP:
    return digits_mlp(cache_dir(request, tmp_path_factory))


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory) -> Path:
    """A weights-only model: a Laplacian matrix, a bias (skipped) and a constant matrix (its
    SQNR is infinite, null in the report)."""
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("weights") / "weights.npz"
    np.savez(
        path,
        **{
            "enc.weight": rng.laplace(size=(64, 32)).astype(np.float32),
            "enc.bias": rng.normal(size=64).astype(np.float32),
            "const.weight": np.full((16, 16), 0.5, np.float32),
        },
    )
    return path


def _run(kind: JobKind, model: Path, spec: dict, out: Path, dataset: Path | None = None,
         limits: JobLimits = JobLimits()) -> dict[str, Any]:  # noqa: B008 (frozen)
    job = JobInput(kind=kind, model_path=model, spec=spec, dataset_path=dataset)
    return run_job(job, out, limits=limits).report


@pytest.fixture(scope="module")
def quantize_report(digits, tmp_path_factory) -> dict[str, Any]:
    spec = {"bits": 4, "granularity": "channel",
            "overrides": [{"match": "^coefficient$", "bits": 5}]}
    return _run(JobKind.QUANTIZE, digits.model_path, spec, tmp_path_factory.mktemp("q"),
                digits.dataset_path)


def test_the_route_publishes_a_union_of_the_three_kinds(document):
    schemas = document["components"]["schemas"]
    assert _route_ref(document) == "#/components/schemas/JobReport"
    union = {s["$ref"] for s in schemas["JobReport"]["anyOf"]}
    assert union == {f"#/components/schemas/{k}" for k in KINDS}
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    for kind in KINDS:
        assert schemas[kind]["additionalProperties"] is True
        assert schemas[kind]["description"]
        for field, prop in schemas[kind]["properties"].items():
            assert prop.get("description"), f"{kind}.{field}"
    assert "report_s" in schemas["QuantizeTimings"]["required"]


def test_a_quantize_report_with_accuracy(document, registry, quantize_report):
    report = quantize_report
    assert report["accuracy"]["fp32"] is not None and report["accuracy"]["top1_drop"] is not None
    assert report["spec"]["overrides"] and report["distribution"] is not None
    _check(document, registry, "QuantizeReport", report)


def test_a_weights_only_quantize_report_without_a_dataset(document, registry, weights_only,
                                                          tmp_path):
    report = _run(JobKind.QUANTIZE, weights_only, {"bits": 3, "granularity": "layer"}, tmp_path)
    assert report["accuracy"] is None and report["model"]["format"] == "npz"
    assert report["skipped"] and None in [r["sqnr_db"] for r in report["layers"]]
    _check(document, registry, "QuantizeReport", report)


@pytest.mark.parametrize("rdoq", [True, "auto"])
def test_a_target_report_with_its_allocation(document, registry, weights_only, tmp_path, rdoq):
    spec = {"target": {"weight_sqnr_db": 25}, "rdoq": rdoq}
    report = _run(JobKind.QUANTIZE, weights_only, spec, tmp_path)
    assert report["allocation"]["achieved"]["met"] is True
    assert report["spec"]["target"] == {"weight_sqnr_db": 25.0}
    assert report["spec"]["rdoq"] == rdoq
    assert ("rdoq_choice" in report["allocation"]) == (rdoq == "auto")
    _check(document, registry, "QuantizeReport", report)


def test_sweep_reports(document, registry, digits, weights_only, tmp_path):
    spec = {"grid": {"bits": [2, 4], "support": ["jayant", "value"], "support_value": [2.0]}}
    with_dataset = _run(JobKind.SWEEP, digits.model_path, spec, tmp_path / "a",
                        digits.dataset_path)
    assert len(with_dataset["rows"]) == 4 and with_dataset["rows"][0]["accuracy"] is not None
    without = _run(JobKind.SWEEP, weights_only, {"grid": {"bits": [2, 3]}}, tmp_path / "b")
    assert without["rows"][0]["accuracy"] is None
    for report in (with_dataset, without):
        _check(document, registry, "SweepReport", report)


def test_a_search_report(document, registry, digits, tmp_path):
    spec = {"base": {"granularity": "layer"}, "candidates": {"bits": [3, 4, 6]}}
    report = _run(JobKind.SEARCH, digits.model_path, spec, tmp_path, digits.dataset_path,
                  JobLimits(max_sweep_points=6))
    actions = {step["action"] for step in report["path"]}
    assert "candidate" in actions and len(actions) > 1  # mixed-precision steps too
    _check(document, registry, "SearchReport", report)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("a missing required field", lambda r: r["timings"].pop("report_s")),
        ("a float where an integer belongs", lambda r: r["layers"][0].update(bits=3.5)),
        ("null where a number belongs", lambda r: r["layers"][0].update(xmax=None)),
        ("a string where null or an object belongs", lambda r: r.update(accuracy="n/a")),
        ("an unknown method", lambda r: r["spec"].update(method="ternary")),
        ("a missing accuracy field", lambda r: r["accuracy"].pop("agreement")),
    ],
)
def test_the_schemas_refuse_a_wrong_report(registry, quantize_report, where, change):
    report = copy.deepcopy(quantize_report)
    change(report)
    assert _errors(registry, "#/components/schemas/QuantizeReport", report), where
    report = copy.deepcopy(quantize_report)
    report["added_later"] = {"any": "thing"}
    report["layers"][0]["added_later"] = 1
    assert not _errors(registry, "#/components/schemas/QuantizeReport", report)
