"""schemathesis on the embedded shape (SQLite, SQLite broker, local storage; the ASGI app in
process): every operation, with generated valid and invalid inputs, answers without a 5xx,
with a status its OpenAPI document lists, the content type it lists and a body that fits the
listed schema. Bounded: a fixed number of examples per operation and a time budget."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import dataset_bytes, mlp_bytes

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
EXAMPLES = 20
BUDGET_S = 240.0


@pytest.fixture
def api_schema(make_settings: SettingsFactory) -> schemathesis.schemas.BaseSchema:
    app = create_app(make_settings(max_upload_bytes=1 << 20, max_array_bytes=1 << 16,
                                   max_json_depth=16))
    with TestClient(app) as client:  # a real model, dataset and job, so that ids can resolve
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes())})
        client.post("/v1/jobs", json={"model_id": model["id"]})
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_generated_requests_get_documented_answers_and_no_5xx(
    api_schema: schemathesis.schemas.BaseSchema,
) -> None:
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    operations = [r.ok() for r in api_schema.get_all_operations()]  # type: ignore[union-attr]
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):
        if time.monotonic() - started > BUDGET_S:
            break

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{response.status_code}: {str(exc)[:400]}")

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
            assert mode is schemathesis.GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:10])
    assert not [s for s in statuses if s >= 500], statuses
    assert len(operations) >= 13
    assert statuses[200] and statuses[404] and statuses[422], statuses
