"""The committed OpenAPI document matches the app, and schemathesis finds no 500 in the app."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from service.api.app import create_app
from service.api.openapi_export import render
from tests.service.conftest import SettingsFactory
from tests.service.helpers import mlp_bytes

COMMITTED = Path(__file__).resolve().parents[3] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    fresh = render()
    assert COMMITTED.read_text() == fresh, (
        "openapi/openapi.json is out of date: run `python -m service.api.openapi_export "
        "openapi/openapi.json` and commit it"
    )


def test_openapi_has_every_documented_endpoint() -> None:
    paths = json.loads(COMMITTED.read_text())["paths"]
    expected = {
        "/v1/models": {"post"}, "/v1/datasets": {"post"}, "/v1/jobs": {"get", "post"},
        "/v1/jobs/batch": {"post"}, "/v1/jobs/{job_id}": {"get"},
        "/v1/jobs/{job_id}/cancel": {"post"}, "/v1/jobs/{job_id}/report": {"get"},
        "/v1/jobs/{job_id}/artifacts": {"get"}, "/v1/jobs/{job_id}/artifacts/{name}": {"get"},
        "/v1/quantizers": {"get"}, "/healthz": {"get"}, "/readyz": {"get"}, "/metrics": {"get"},
        "/v1/models/{model_id}": {"get", "delete"}, "/v1/datasets/{dataset_id}": {"get", "delete"},
        "/v1/jobs/{job_id}/events": {"get"}, "/v1/jobs/{job_id}/report.html": {"get"},
        "/v1/jobs/{job_id}/webhook": {"get"}, "/v1/webhooks/secret": {"get", "post"},
        "/v1/quantizers/check": {"post"},
    }
    assert {"get", "head"} <= set(paths["/v1/jobs/{job_id}/artifacts/{name}"])
    assert "delete" in paths["/v1/jobs/{job_id}"]
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    submit = paths["/v1/jobs"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(submit)


@pytest.fixture
def api_schema(make_settings: SettingsFactory) -> schemathesis.schemas.BaseSchema:
    app = create_app(make_settings(max_upload_bytes=1 << 20))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:  # one real model and job, so ids can resolve
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        client.post("/v1/jobs", json={"model_id": model["id"]})
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
def test_no_server_error(api_schema: schemathesis.schemas.BaseSchema) -> None:
    """Every operation, with generated valid and invalid inputs: never a 500."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [r.ok() for r in api_schema.get_all_operations()]  # type: ignore[union-attr]
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {response.text[:300]}")

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
            assert mode is schemathesis.GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
    assert len(operations) >= 13
    # the generated requests reached the routes: answers and refusals of several kinds
    assert statuses[200] and statuses[404] and statuses[415] and statuses[422], statuses


def test_spec_shapes_of_every_kind_are_described() -> None:
    schemas = json.loads(COMMITTED.read_text())["components"]["schemas"]
    described = schemas["JobCreate"]["properties"]["spec"]["description"]
    for kind in ("quantize", "sweep", "search"):
        assert f"**{kind}**" in described, kind
    for field in ('"grid"', '"support_value"', '"max_top1_drop"', '"candidates"',
                  '"mixed_precision"', "GET /v1/quantizers"):
        assert field in described, field
