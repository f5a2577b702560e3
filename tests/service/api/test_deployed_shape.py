"""The API on its deployed parts: PostgreSQL job store, Redis broker, S3 storage (moto)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import finish_job, mlp_bytes, submit, upload_model


def test_upload_submit_fetch_on_postgres_redis_s3(
    make_settings: SettingsFactory, postgres_url: str, redis_url: str, s3_endpoint: str,
    tmp_path: Path,
) -> None:
    settings = make_settings(database_url=postgres_url, broker_url=redis_url, storage="s3",
                             s3_endpoint_url=s3_endpoint, s3_bucket=f"qs-{uuid.uuid4().hex[:8]}",
                             rate_limit_per_minute=1000)
    app = create_app(settings)  # migrates PostgreSQL and creates the bucket
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        data = mlp_bytes(seed=11)
        model = upload_model(client, data)
        assert model["sha256"] == hashlib.sha256(data).hexdigest()
        job = submit(client, model["id"], {"bits": 5})
        assert job["status"] == "queued"
        finish_job(app, job["id"], tmp_path / "out")
        listed = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
        entry = next(a for a in listed if a["name"] == "model.onnx")
        r = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
        assert r.status_code == 200 and r.content == data  # the fake worker stored the input
        assert hashlib.sha256(r.content).hexdigest() == entry["sha256"]
        assert r.headers["ETag"] == f'"{entry["sha256"]}"'
        assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["count"] >= 1
