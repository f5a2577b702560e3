"""Concurrent callers on one app: every submission accepted once, an Idempotency-Key raced by
many clients still makes one job (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import mlp_bytes


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, make_settings: SettingsFactory) -> str:
    if request.param == "sqlite":
        return make_settings().database_url
    return str(request.getfixturevalue("postgres_url"))


def test_concurrent_submissions_and_a_raced_idempotency_key(
    make_settings: SettingsFactory, database_url: str
) -> None:
    app = create_app(make_settings(database_url=database_url))
    with TestClient(app) as client:
        model_id = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes(seed=21))}
                               ).json()["id"]
        before = client.get("/v1/jobs", params={"model_id": model_id}).json()["count"]

    async def run() -> tuple[list[httpx.Response], list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            plain = [c.post("/v1/jobs", json={"model_id": model_id, "spec": {"bits": 4}})
                     for _ in range(30)]
            keyed = [c.post("/v1/jobs", json={"model_id": model_id},
                            headers={"Idempotency-Key": "same-key"}) for _ in range(20)]
            results = await asyncio.gather(*plain, *keyed)
        return list(results[:30]), list(results[30:])

    plain, keyed = asyncio.run(run())
    assert [r.status_code for r in plain + keyed] == [202] * 50
    assert len({r.json()["id"] for r in plain}) == 30
    assert len({r.json()["id"] for r in keyed}) == 1
    with TestClient(app) as client:
        after = client.get("/v1/jobs", params={"model_id": model_id, "limit": 200}).json()
    assert after["count"] - before == 31
