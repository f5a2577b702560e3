"""API keys per team, isolation between teams, the per-key rate limit and CORS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.api.app import create_app
from service.store.keys import KeysRepo, hash_key
from service.store.models import ApiKey
from tests.service.conftest import SettingsFactory
from tests.service.helpers import ctx_of, mlp_bytes, submit, upload_model


@pytest.fixture
def secured(make_settings: SettingsFactory) -> Iterator[TestClient]:
    app = create_app(make_settings(auth_enabled=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_stored_hashed(secured: TestClient) -> None:
    db = ctx_of(secured.app).db  # type: ignore[arg-type]
    issued = KeysRepo(db).issue(team="vision", name="ci")
    assert issued.key.startswith("qs_")
    with db.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.id == issued.key_id))
    assert row is not None and row.key_hash == hash_key(issued.key)
    assert issued.key not in (row.key_hash, row.prefix, row.name)


def test_missing_wrong_and_revoked_keys_are_401(secured: TestClient) -> None:
    db = ctx_of(secured.app).db  # type: ignore[arg-type]
    r = secured.get("/v1/jobs")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    r = secured.get("/v1/jobs", headers=bearer("qs_nope_nope"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    issued = KeysRepo(db).issue(team="nlp")
    assert secured.get("/v1/jobs", headers={"X-API-Key": issued.key}).status_code == 200
    KeysRepo(db).revoke(issued.key_id)
    assert secured.get("/v1/jobs", headers=bearer(issued.key)).status_code == 401
    assert secured.get("/healthz").status_code == 200  # probes need no key


def test_a_team_sees_only_its_own(secured: TestClient) -> None:
    db = ctx_of(secured.app).db  # type: ignore[arg-type]
    a = bearer(KeysRepo(db).issue(team="team-a").key)
    b = bearer(KeysRepo(db).issue(team="team-b").key)
    model = upload_model(secured, mlp_bytes(seed=7), headers=a)
    job = submit(secured, model["id"], headers=a)
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/report",
                 f"/v1/jobs/{job['id']}/artifacts", f"/v1/models/{model['id']}"):
        r = secured.get(path, headers=b)
        assert r.status_code == 404, path
    assert secured.post(f"/v1/jobs/{job['id']}/cancel", headers=b).status_code == 404
    r = secured.post("/v1/jobs", json={"model_id": model["id"]}, headers=b)
    assert r.status_code == 404 and r.json()["error"]["message"] == (
        f"model {model['id']!r} not found")
    assert secured.get("/v1/jobs", headers=b).json()["count"] == 0
    assert secured.get("/v1/jobs", headers=a).json()["count"] == 1
    # the same bytes uploaded by team b become team b's own model
    theirs = upload_model(secured, mlp_bytes(seed=7), headers=b)
    assert theirs["id"] != model["id"] and theirs["sha256"] == model["sha256"]


def test_rate_limit_in_process(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(rate_limit_per_minute=5))
    with TestClient(app, raise_server_exceptions=False) as client:
        codes = [client.get("/v1/jobs").status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = client.get("/v1/jobs")
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        assert client.get("/healthz").status_code == 200  # not limited


def test_rate_limit_in_redis_is_per_key(make_settings: SettingsFactory, redis_url: str) -> None:
    settings = make_settings(rate_limit_per_minute=3, auth_enabled=True, broker_url=redis_url)
    app = create_app(settings)
    db = ctx_of(app).db
    key_a = bearer(KeysRepo(db).issue(team=f"t-{uuid.uuid4().hex[:6]}").key)
    key_b = bearer(KeysRepo(db).issue(team=f"t-{uuid.uuid4().hex[:6]}").key)
    with TestClient(app, raise_server_exceptions=False) as client:
        codes = [client.get("/v1/jobs", headers=key_a).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert client.get("/v1/jobs", headers=key_b).status_code == 200  # its own bucket
    # a second API replica shares the buckets through Redis
    with TestClient(create_app(settings), raise_server_exceptions=False) as replica:
        assert replica.get("/v1/jobs", headers=key_a).status_code == 429


def test_cors(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(cors_origins=["https://portal.example"]))
    with TestClient(app, raise_server_exceptions=False) as client:
        pre = client.options("/v1/jobs", headers={
            "Origin": "https://portal.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Idempotency-Key, Content-Type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://portal.example"
        r = client.get("/v1/jobs", headers={"Origin": "https://portal.example"})
        assert r.headers["access-control-allow-origin"] == "https://portal.example"
        assert "Location" in r.headers["access-control-expose-headers"]
        other = client.get("/v1/jobs", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
