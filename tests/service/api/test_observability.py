"""/healthz, /readyz, /metrics and the JSON logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.api.app import create_app
from service.logging import JsonFormatter, job_context
from tests.service.conftest import SettingsFactory
from tests.service.helpers import finish_job, submit, upload_model


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready",
                        "checks": {"database": "ok", "broker": "ok", "storage": "ok"}}


def test_ready_names_the_storage_that_is_down(make_settings: SettingsFactory) -> None:
    settings = make_settings(storage="s3", s3_endpoint_url="http://127.0.0.1:9",
                             s3_bucket="gone")
    app = create_app(settings, migrate=False)
    app.state.ctx.db.migrate()
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/readyz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "not_ready" and error["message"] == "not ready: storage unavailable"
    assert error["details"]["checks"]["storage"] == "unavailable"  # no host, no bucket


def test_metrics(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    done = submit(client, model["id"])
    submit(client, model["id"])
    finish_job(client.app, done["id"], tmp_path)  # type: ignore[arg-type]
    client.get(f"/v1/jobs/{done['id']}")
    client.get("/v1/jobs/unknown")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = samples(r.text)
    assert values[("quantserve_jobs", (("status", "succeeded"),))] == 1
    assert values[("quantserve_jobs", (("status", "queued"),))] == 1
    assert values[("quantserve_jobs", (("status", "failed"),))] == 0
    assert values[("quantserve_queue_depth", ())] == 1
    assert values[("quantserve_job_duration_seconds_count", (("status", "succeeded"),))] == 1
    assert values[("quantserve_job_duration_seconds_bucket",
                   (("le", "+Inf"), ("status", "succeeded")))] == 1
    assert ("quantserve_broker_queue_depth", ()) in values
    route = (("method", "GET"), ("route", "/v1/jobs/{job_id}"))
    assert values[("quantserve_http_request_duration_seconds_count", (*route,
                                                                      ("status", "200")))] == 1
    assert values[("quantserve_http_request_duration_seconds_count", (*route,
                                                                      ("status", "404")))] == 1


def test_json_logs_carry_the_job_id() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("quantserve.worker", logging.INFO, __file__, 1, "stage %s",
                               ("quantizing",), None)
    record.progress = 0.5
    with job_context("job-123"):
        line = json.loads(formatter.format(record))
    assert line["job_id"] == "job-123" and line["message"] == "stage quantizing"
    assert line["level"] == "info" and line["progress"] == 0.5
    assert "job_id" not in json.loads(formatter.format(record))  # outside the context


def test_request_log_line(client: TestClient, caplog: object) -> None:
    import pytest

    assert isinstance(caplog, pytest.LogCaptureFixture)
    with caplog.at_level(logging.INFO, logger="quantserve.api"):
        r = client.get("/v1/jobs", headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    record = next(rec for rec in caplog.records if rec.name == "quantserve.api")
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/v1/jobs" and line["status"] == 200
    assert line["request_id"] == "req-42"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="quantserve"):
        model = upload_model(client)
        job = submit(client, model["id"])
        client.get(f"/v1/jobs/{job['id']}")
    tagged = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    accepted = [t for t in tagged if t["message"] == "job accepted"]
    assert accepted and accepted[0]["job_id"] == job["id"]
    assert any(t.get("route") == "/v1/jobs/{job_id}" and t["job_id"] == job["id"]
               for t in tagged)


def test_storage_down_gives_503_on_upload(make_settings: SettingsFactory) -> None:
    from tests.service.helpers import mlp_bytes

    app = create_app(make_settings(storage="s3", s3_endpoint_url="http://127.0.0.1:9",
                                   s3_bucket="gone"), migrate=False)
    app.state.ctx.db.migrate()
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "storage_unavailable"
    assert "gone" in r.json()["error"]["message"]


def test_database_down_gives_503(make_settings: SettingsFactory) -> None:
    from tests.service.conftest import free_port

    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
    app = create_app(make_settings(database_url=dead), migrate=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/jobs")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["message"] == "not ready: database unavailable"
