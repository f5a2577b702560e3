"""What a caller gets for each kind of bad request: the status, the code and the message.

The table is the contract for clients (and the README's error section): never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from service.api.app import create_app
from service.store.keys import KeysRepo
from tests.service.conftest import SettingsFactory, free_port
from tests.service.helpers import ctx_of, mlp_bytes


@dataclass(frozen=True, kw_only=True)
class World:
    client: TestClient
    key: dict[str, str]
    model_id: str
    other_job_id: str


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    call: Callable[[World], Response]
    status: int
    code: str
    message: str  # a fragment the message must contain


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from service.settings import Settings

    tmp = tmp_path_factory.mktemp("bad")
    settings = Settings(_env_file=None, database_url=f"sqlite:///{tmp}/q.db",  # type: ignore[call-arg]
                        broker_url=f"sqla+sqlite:///{tmp}/broker.db",
                        storage_path=str(tmp / "storage"), max_upload_bytes=100_000,
                        auth_enabled=True, rate_limit_per_minute=0)
    app = create_app(settings)
    db = ctx_of(app).db
    mine = {"Authorization": f"Bearer {KeysRepo(db).issue(team='mine').key}"}
    theirs = {"Authorization": f"Bearer {KeysRepo(db).issue(team='theirs').key}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}, headers=mine)
        other_model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes(seed=9))},
                                  headers=theirs)
        other_job = client.post("/v1/jobs", json={"model_id": other_model.json()["id"]},
                                headers=theirs)
        yield World(client=client, key=mine, model_id=model.json()["id"],
                    other_job_id=other_job.json()["id"])


def _post_job(w: World, body: Any, **kw: Any) -> Response:
    return w.client.post("/v1/jobs", json=body, headers=w.key, **kw)


CASES = [
    Case(name="malformed model", status=422, code="invalid_model", message="m.onnx",
         call=lambda w: w.client.post("/v1/models", files={"file": ("m.onnx", b"not onnx")},
                                      headers=w.key)),
    Case(name="truncated model", status=422, code="invalid_model", message="m.onnx",
         call=lambda w: w.client.post("/v1/models",
                                      files={"file": ("m.onnx", mlp_bytes()[:500])},
                                      headers=w.key)),
    Case(name="unknown model suffix", status=415, code="unsupported_media_type",
         message="'weights.pt' has an unknown format",
         call=lambda w: w.client.post("/v1/models", files={"file": ("weights.pt", b"x")},
                                      headers=w.key)),
    Case(name="unknown suffix, refused before the body is read", status=415,
         code="unsupported_media_type", message="'big.bin' has an unknown format",
         call=lambda w: w.client.post("/v1/models", files={"file": ("big.bin", b"\0" * 300_000)},
                                      headers=w.key)),
    Case(name="dataset not npz", status=415, code="unsupported_media_type",
         message="expected .npz",
         call=lambda w: w.client.post("/v1/datasets", files={"file": ("d.csv", b"1,2")},
                                      headers=w.key)),
    Case(name="model upload as JSON", status=415, code="unsupported_media_type",
         message="send multipart/form-data",
         call=lambda w: w.client.post("/v1/models", json={"file": "x"}, headers=w.key)),
    Case(name="job as text/plain", status=415, code="unsupported_media_type",
         message="send application/json",
         call=lambda w: w.client.post("/v1/jobs", content=b"{}",
                                      headers={**w.key, "Content-Type": "text/plain"})),
    Case(name="upload missing file field", status=422, code="invalid_request",
         message="unexpected multipart field 'model'",
         call=lambda w: w.client.post("/v1/models", files={"model": ("m.onnx", b"x")},
                                      headers=w.key)),
    Case(name="too large (Content-Length)", status=413, code="payload_too_large",
         message="limit is 100000 bytes",
         call=lambda w: w.client.post("/v1/models",
                                      files={"file": ("m.onnx", b"\0" * 2_000_000)},
                                      headers=w.key)),
    Case(name="too large (streamed)", status=413, code="payload_too_large",
         message="limit of 100000 bytes",
         call=lambda w: w.client.post("/v1/models",
                                      files={"file": ("m.onnx", b"\0" * 300_000)},
                                      headers=w.key)),
    Case(name="spec bits out of range", status=422, code="invalid_spec",
         message="bits=17 must be between 1 and 16",
         call=lambda w: _post_job(w, {"model_id": w.model_id, "spec": {"bits": 17}})),
    Case(name="spec unknown method", status=422, code="invalid_spec", message="method='fft'",
         call=lambda w: _post_job(w, {"model_id": w.model_id, "spec": {"method": "fft"}})),
    Case(name="spec unknown field", status=422, code="invalid_spec", message="wordsize",
         call=lambda w: _post_job(w, {"model_id": w.model_id, "spec": {"wordsize": 3}})),
    Case(name="spec not JSON in multipart", status=422, code="invalid_spec",
         message="form field 'spec' is not valid JSON",
         call=lambda w: w.client.post("/v1/jobs", files={"model": ("m.onnx", mlp_bytes())},
                                      data={"spec": "{bits: 3"}, headers=w.key)),
    Case(name="body not JSON", status=400, code="bad_request", message="not valid JSON",
         call=lambda w: w.client.post("/v1/jobs", content=b"{",
                                      headers={**w.key, "Content-Type": "application/json"})),
    Case(name="job without model_id", status=422, code="invalid_request", message="model_id",
         call=lambda w: _post_job(w, {"spec": {}})),
    Case(name="unknown kind", status=422, code="invalid_request", message="kind",
         call=lambda w: _post_job(w, {"model_id": w.model_id, "kind": "train"})),
    Case(name="unknown model id", status=404, code="not_found",
         message="model 'nope' not found",
         call=lambda w: _post_job(w, {"model_id": "nope"})),
    Case(name="unknown job id", status=404, code="not_found", message="job 'nope' not found",
         call=lambda w: w.client.get("/v1/jobs/nope", headers=w.key)),
    Case(name="another team's job", status=404, code="not_found", message="not found",
         call=lambda w: w.client.get(f"/v1/jobs/{w.other_job_id}", headers=w.key)),
    Case(name="another team's job cancelled", status=404, code="not_found", message="not found",
         call=lambda w: w.client.post(f"/v1/jobs/{w.other_job_id}/cancel", headers=w.key)),
    Case(name="missing key", status=401, code="missing_api_key", message="API key is required",
         call=lambda w: w.client.get("/v1/jobs")),
    Case(name="wrong key", status=401, code="invalid_api_key", message="not valid",
         call=lambda w: w.client.get("/v1/jobs", headers={"X-API-Key": "qs_0_0"})),
    Case(name="bad status filter", status=422, code="invalid_request", message="status",
         call=lambda w: w.client.get("/v1/jobs", params={"status": "done"}, headers=w.key)),
    Case(name="limit out of range", status=422, code="invalid_request", message="limit",
         call=lambda w: w.client.get("/v1/jobs", params={"limit": 0}, headers=w.key)),
    Case(name="unknown path", status=404, code="not_found", message="no such path",
         call=lambda w: w.client.get("/v1/nothing", headers=w.key)),
    Case(name="wrong method", status=405, code="method_not_allowed", message="Not Allowed",
         call=lambda w: w.client.delete("/v1/jobs", headers=w.key)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_request(world: World, case: Case) -> None:
    r = case.call(world)
    assert r.status_code == case.status, r.text
    error = r.json()["error"]
    assert error["code"] == case.code
    assert case.message in error["message"]


def test_broker_down_gives_503_and_leaves_no_queued_job(make_settings: SettingsFactory) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_app(make_settings(broker_url=dead, rate_limit_per_minute=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        model = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())}).json()
        r = client.post("/v1/jobs", json={"model_id": model["id"]},
                        headers={"Idempotency-Key": "k1"})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "broker_unavailable"
        assert "retry later" in r.json()["error"]["message"]
        assert r.headers["Retry-After"] == "5"
        assert client.get("/v1/jobs").json()["count"] == 0
        ready = client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["error"]["details"]["checks"]
        assert checks["database"] == "ok" and checks["storage"] == "ok"
        assert checks["broker"].startswith("unavailable")
        assert "broker" in ready.json()["error"]["message"]
