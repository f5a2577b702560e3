"""GET /v1/quantizers publishes what validation accepts: every bound is checked against it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcore import DEFAULT_SUPPORT, InvalidSpecError, JobKind, Method, QuantSpec, validate_job


@pytest.fixture
def described(client: TestClient) -> dict[str, Any]:
    r = client.get("/v1/quantizers")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_methods_and_defaults(described: dict[str, Any]) -> None:
    assert [m["name"] for m in described["methods"]] == [m.value for m in Method]
    for m in described["methods"]:
        assert m["default_support"] == DEFAULT_SUPPORT[Method(m["name"])].value
    assert described["defaults"] == QuantSpec().to_dict()
    names = {p["name"] for p in described["parameters"]}
    assert names == set(QuantSpec.KNOWN_FIELDS)


def _spec_for(name: str, value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {name: value}
    if name == "support_value":
        spec["support"] = "value"
    if name in ("exponent_bits", "mantissa_bits"):
        spec.update(method="float", exponent_bits=1, mantissa_bits=0)
        spec[name] = value
    return spec


def test_published_ranges_are_the_validated_ones(described: dict[str, Any]) -> None:
    numeric = [p for p in described["parameters"] if p["minimum"] is not None]
    assert {p["name"] for p in numeric} >= {"bits", "mu", "deadzone_ratio", "support_value"}
    for p in numeric:
        name, lo, hi = p["name"], p["minimum"], p["maximum"]
        integer = p["type"] == "integer"
        step = 1 if integer else 1e-6 * max(1.0, abs(hi))
        validate_job(JobKind.QUANTIZE, _spec_for(name, int(hi) if integer else hi))
        if not p["exclusive_minimum"]:
            validate_job(JobKind.QUANTIZE, _spec_for(name, int(lo) if integer else lo))
        with pytest.raises(InvalidSpecError, match=name):
            validate_job(JobKind.QUANTIZE, _spec_for(name, (int(hi) + 1) if integer else hi + step))
        below = lo if p["exclusive_minimum"] else (lo - 1 if integer else lo - step)
        with pytest.raises(InvalidSpecError, match=name):
            validate_job(JobKind.QUANTIZE, _spec_for(name, int(below) if integer else below))


def test_choices_are_the_enums(described: dict[str, Any]) -> None:
    by_name = {p["name"]: p for p in described["parameters"]}
    assert by_name["method"]["choices"] == [m.value for m in Method]
    assert "jayant" in by_name["support"]["choices"]
    assert by_name["granularity"]["choices"] == ["model", "layer", "channel", "group", "auto"]
    assert by_name["calibration"]["choices"] == [
        "auto", "none", "bias", "gptq", "flat", "synthetic"
    ]
    assert by_name["calibration"]["default"] == "auto"
    assert by_name["bits"]["default"] == 8 and by_name["bits"]["type"] == "integer"


def test_target_is_published_and_checked(client: TestClient, described: dict[str, Any]) -> None:
    params = {p["name"]: p for p in described["parameters"]}
    assert params["target"]["type"] == "object" and params["target"]["default"] is None
    assert params["rdoq"]["type"] == "boolean" and params["rdoq"]["default"] is False
    ok = client.post("/v1/quantizers/check",
                     json={"spec": {"target": {"bits_per_weight": 3}, "rdoq": True}})
    assert ok.status_code == 200
    assert ok.json()["spec"]["target"] == {"bits_per_weight": 3.0}
    assert ok.json()["spec"]["granularity"] == "layer"
    bad = client.post("/v1/quantizers/check",
                      json={"spec": {"target": {"weight_sqnr_db": 30}, "bits": 4}})
    assert bad.status_code == 422 and "leave out bits" in bad.json()["error"]["message"]
