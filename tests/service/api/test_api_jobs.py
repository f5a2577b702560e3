"""Jobs over HTTP: submission (JSON, multipart, batch), idempotency, paging, cancel, report,
artifacts with ETag. A job is finished the way a worker finishes it (claim, store, succeed)."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import ctx_of, finish_job, mlp_bytes, submit, upload_model


def app_of(client: TestClient) -> FastAPI:
    return client.app  # type: ignore[return-value]


def broker_messages(broker_url: str) -> list[dict[str, Any]]:
    """The messages in the embedded broker's file, oldest first, with their decoded body."""
    path = broker_url.removeprefix("sqla+sqlite:///")
    with closing(sqlite3.connect(path)) as conn:
        payloads = [json.loads(p) for (p,) in
                    conn.execute("SELECT payload FROM kombu_message ORDER BY id")]
    for payload in payloads:
        args, kwargs, _ = json.loads(base64.b64decode(payload["body"]))
        payload.update(args=args, kwargs=kwargs)
    return payloads


def test_submit_json_gives_202_location_and_the_applied_spec(client: TestClient) -> None:
    model = upload_model(client)
    r = client.post("/v1/jobs", json={"model_id": model["id"], "spec": {"bits": 3}})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["kind"] == "quantize" and job["progress"] == 0.0
    assert job["spec"]["bits"] == 3 and job["spec"]["support"] == "mse"  # auto, up to 3 bits
    assert job["error"] is None and job["summary"] is None
    assert client.get(f"/v1/jobs/{job['id']}").json() == job
    with ctx_of(app_of(client)).db.session() as session:
        from service.store.models import Job

        row = session.get(Job, job["id"])
        assert row is not None and row.task_id  # handed to the broker, task id kept
    # The row was written with the task id the message carries; the message holds the id only.
    (message,) = broker_messages(ctx_of(app_of(client)).settings.broker_url)
    assert message["headers"]["id"] == row.task_id
    assert message["args"] == [job["id"]] and message["kwargs"] == {}


def test_submit_multipart_with_files(client: TestClient) -> None:
    r = client.post("/v1/jobs", files={"model": ("m.onnx", mlp_bytes(seed=5))},
                    data={"spec": '{"method": "mulaw", "bits": 6}'})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["spec"]["method"] == "mulaw" and job["spec"]["support"] == "max_abs"
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["sha256"] == hashlib.sha256(mlp_bytes(seed=5)).hexdigest()


def test_idempotency_key_returns_the_first_job(client: TestClient) -> None:
    model = upload_model(client)
    headers = {"Idempotency-Key": "pipeline-run-42"}
    first = client.post("/v1/jobs", json={"model_id": model["id"]}, headers=headers)
    again = client.post("/v1/jobs", json={"model_id": model["id"]}, headers=headers)
    other = client.post("/v1/jobs", json={"model_id": model["id"]},
                        headers={"Idempotency-Key": "another"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert other.json()["id"] != first.json()["id"]
    assert client.get("/v1/jobs").json()["count"] == 2


def test_idempotency_key_sent_with_another_request_is_refused(client: TestClient) -> None:
    model = upload_model(client)
    other_model = client.post("/v1/models", files={"file": ("o.onnx", mlp_bytes(seed=9))}).json()
    headers = {"Idempotency-Key": "deploy-7"}
    first = client.post("/v1/jobs", json={"model_id": model["id"], "spec": {"bits": 3}},
                        headers=headers)
    assert first.status_code == 202, first.text
    # Defaults filled in make the same applied spec: still the same request.
    same = client.post("/v1/jobs", headers=headers, json={
        "model_id": model["id"], "spec": {"bits": 3, "method": "uniform"}})
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
    for body, differs in [
        ({"model_id": model["id"], "spec": {"bits": 4}}, ["spec"]),
        ({"model_id": other_model["id"], "spec": {"bits": 3}}, ["model_id"]),
        ({"model_id": other_model["id"], "spec": {"bits": 5}}, ["model_id", "spec"]),
    ]:
        r = client.post("/v1/jobs", json=body, headers=headers)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert "deploy-7" in error["message"] and first.json()["id"] in error["message"]
        assert error["details"]["differs"] == differs
    assert client.get("/v1/jobs").json()["count"] == 1


def test_batch_racing_an_earlier_batch_with_the_same_key(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key taken between the check and the insert (a concurrent retry): the jobs whose keys
    were taken are the earlier ones, the rest are accepted, and only those are published."""
    from service.store.submissions import Submission

    model = upload_model(client)
    headers = {"Idempotency-Key": "nightly"}
    jobs = [{"model_id": model["id"], "spec": {"bits": b}} for b in (2, 3, 4)]
    first = client.post("/v1/jobs/batch", json={"jobs": jobs[:2]}, headers=headers).json()
    real = Submission.existing
    calls = []

    def not_yet_written(*args: Any) -> dict[str, Any]:  # the check ran before their insert
        calls.append(args)
        return {} if len(calls) == 1 else real(*args)

    monkeypatch.setattr(Submission, "existing", not_yet_written)
    r = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=headers)
    assert r.status_code == 202, r.text
    ids = [j["id"] for j in r.json()["data"]]
    assert ids[:2] == [j["id"] for j in first["data"]]
    assert ids[2] not in ids[:2] and r.json()["data"][2]["spec"]["bits"] == 4
    assert client.get("/v1/jobs").json()["count"] == 3
    published = broker_messages(ctx_of(app_of(client)).settings.broker_url)
    assert [m["args"] for m in published] == [[i] for i in ids]


def test_batch(client: TestClient) -> None:
    model = upload_model(client)
    jobs = [{"model_id": model["id"], "spec": {"bits": b}} for b in (2, 3, 4)]
    r = client.post("/v1/jobs/batch", json={"jobs": jobs})
    assert r.status_code == 202, r.text
    assert [j["spec"]["bits"] for j in r.json()["data"]] == [2, 3, 4]
    assert r.json()["count"] == 3
    bad = client.post("/v1/jobs/batch", json={"jobs": [*jobs, {"model_id": model["id"],
                                                               "spec": {"bits": 0}}]})
    assert bad.status_code == 422 and "bits=0" in bad.json()["error"]["message"]
    assert client.get("/v1/jobs").json()["count"] == 3  # nothing of the bad batch accepted


def test_paging_newest_first_with_filters(client: TestClient, tmp_path: Path) -> None:
    model_a = upload_model(client, mlp_bytes(seed=1))
    model_b = upload_model(client, mlp_bytes(seed=2))
    ids = [submit(client, model_a["id"])["id"] for _ in range(5)]
    ids.append(submit(client, model_b["id"])["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        assert page["count"] == 6 and len(page["data"]) <= 2
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # every job once, newest first
    only_a = client.get("/v1/jobs", params={"model_id": model_a["id"], "limit": 50}).json()
    assert only_a["count"] == 5 and {j["model_id"] for j in only_a["data"]} == {model_a["id"]}
    finish_job(app_of(client), ids[0], tmp_path)
    done = client.get("/v1/jobs", params={"status": "succeeded"}).json()
    assert [j["id"] for j in done["data"]] == [ids[0]]
    r = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]


def test_cancel(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    job = submit(client, model["id"])
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == (
        f"job {job['id']!r} is cancelled; only queued or running jobs can be cancelled")
    done = submit(client, model["id"])
    finish_job(app_of(client), done["id"], tmp_path)
    assert client.post(f"/v1/jobs/{done['id']}/cancel").status_code == 409


def test_report_and_artifacts(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    job = submit(client, model["id"])
    early = client.get(f"/v1/jobs/{job['id']}/report")
    assert early.status_code == 409 and early.json()["error"]["code"] == "job_not_succeeded"
    assert client.get(f"/v1/jobs/{job['id']}/artifacts").json() == []
    report = finish_job(app_of(client), job["id"], tmp_path / "out")
    assert client.get(f"/v1/jobs/{job['id']}/report").json() == report
    status = client.get(f"/v1/jobs/{job['id']}").json()
    assert status["status"] == "succeeded" and status["progress"] == 1.0
    assert status["summary"] == report["summary"]
    listed = client.get(f"/v1/jobs/{job['id']}/artifacts").json()
    assert [a["name"] for a in listed] == ["model.onnx", "report.json"]
    onnx_entry = listed[0]
    data = (tmp_path / "out" / "model.onnx").read_bytes()
    assert onnx_entry == {"name": "model.onnx", "size_bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest(),
                          "media_type": "application/octet-stream"}
    r = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx")
    assert r.status_code == 200 and r.content == data
    assert r.headers["ETag"] == f'"{onnx_entry["sha256"]}"'
    assert r.headers["Content-Length"] == str(len(data))
    cached = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx",
                        headers={"If-None-Match": r.headers["ETag"]})
    assert cached.status_code == 304 and cached.content == b""
    stale = client.get(f"/v1/jobs/{job['id']}/artifacts/model.onnx",
                       headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200
    missing = client.get(f"/v1/jobs/{job['id']}/artifacts/nothing.bin")
    assert missing.status_code == 404 and "nothing.bin" in missing.json()["error"]["message"]


def test_failed_job_shows_its_error(client: TestClient) -> None:
    model = upload_model(client)
    job = submit(client, model["id"])
    repo = ctx_of(app_of(client)).jobs
    repo.claim(job["id"])
    repo.fail(job["id"], "no_weights", "no tensor matched include=['conv']")
    body = client.get(f"/v1/jobs/{job['id']}").json()
    assert body["status"] == "failed"
    assert body["error"] == {"code": "no_weights", "message": "no tensor matched include=['conv']"}


def test_multipart_with_a_bad_spec_stores_nothing(client: TestClient) -> None:
    data = mlp_bytes(seed=33)
    r = client.post("/v1/jobs", files={"model": ("m.onnx", data)}, data={"spec": '{"bits": 40}'})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec"
    assert "bits=40" in r.json()["error"]["message"]
    storage = ctx_of(app_of(client)).storage
    assert not storage.exists(f"blobs/{hashlib.sha256(data).hexdigest()}.onnx")


def test_sweep_points_are_bounded_by_the_settings(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(max_sweep_points=3))
    with TestClient(app, raise_server_exceptions=False) as client:
        model = upload_model(client)
        sweep = {"base": {}, "grid": {"bits": [2, 3, 4, 5]}}
        r = client.post("/v1/jobs", json={"model_id": model["id"], "kind": "sweep",
                                          "spec": sweep})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_spec"
        assert "more than the limit of 3" in r.json()["error"]["message"]
        sweep["grid"]["bits"] = [2, 3, 4]
        ok = client.post("/v1/jobs", json={"model_id": model["id"], "kind": "sweep",
                                           "spec": sweep})
        assert ok.status_code == 202 and ok.json()["kind"] == "sweep"


def test_batch_racing_a_different_earlier_batch_leaves_nothing_queued(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key taken concurrently by another request: refused, and the rows this call wrote
    before it knew are removed (none was published)."""
    from service.store.submissions import Submission

    model = upload_model(client)
    headers = {"Idempotency-Key": "weekly"}
    client.post("/v1/jobs/batch", headers=headers,
                json={"jobs": [{"model_id": model["id"], "spec": {"bits": b}} for b in (2, 3)]})
    real = Submission.existing
    calls = []

    def not_yet_written(*args: Any) -> dict[str, Any]:
        calls.append(args)
        return {} if len(calls) == 1 else real(*args)

    monkeypatch.setattr(Submission, "existing", not_yet_written)
    # weekly#0 as before (bits 2), weekly#1 now another spec, weekly#2 new.
    jobs = [{"model_id": model["id"], "spec": {"bits": b}} for b in (2, 7, 8)]
    r = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert r.json()["error"]["details"]["idempotency_key"] == "weekly#1"
    assert client.get("/v1/jobs").json()["count"] == 2
    assert len(broker_messages(ctx_of(app_of(client)).settings.broker_url)) == 2
