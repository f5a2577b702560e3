"""DELETE of jobs, models and datasets (files included), and the retention sweep."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from service.api.app import create_app
from service.api.removal import sweep_retention
from service.store.keys import KeysRepo
from service.store.models import Job, Model, utcnow
from tests.service.conftest import SettingsFactory
from tests.service.helpers import (
    ctx_of,
    dataset_bytes,
    finish_job,
    mlp_bytes,
    submit,
    upload_model,
)


def _storage_file(client: TestClient, key: str) -> Path:
    return Path(ctx_of(client.app).settings.storage_path) / key  # type: ignore[arg-type]


def test_a_finished_job_is_deleted_with_its_files(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    job = submit(client, model["id"])
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_finished"
    assert r.json()["error"]["details"] == {"status": "queued"}
    finish_job(client.app, job["id"], tmp_path / "w")  # type: ignore[arg-type]
    keys = [a.storage_key for a in ctx_of(client.app).jobs.artifacts(job["id"])]  # type: ignore[arg-type]
    assert keys and all(_storage_file(client, k).is_file() for k in keys)
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not any(_storage_file(client, k).exists() for k in keys)
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/artifacts/model.onnx"):
        assert client.get(path).status_code == 404
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert job["id"] not in [j["id"] for j in client.get("/v1/jobs").json()["data"]]


def test_a_cancelled_job_can_be_deleted(client: TestClient) -> None:
    job = submit(client, upload_model(client)["id"])
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204


def test_a_model_in_use_is_refused_then_deleted(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    job = submit(client, model["id"])
    r = client.delete(f"/v1/models/{model['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "resource_in_use"
    assert r.json()["error"]["details"]["job_ids"] == [job["id"]]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    blob = _storage_file(client, f"blobs/{model['sha256']}.onnx")
    assert blob.is_file()
    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert not blob.exists()
    assert client.get(f"/v1/models/{model['id']}").status_code == 404
    assert client.delete(f"/v1/models/{model['id']}").status_code == 404


def test_a_dataset_is_deleted_like_a_model(client: TestClient) -> None:
    r = client.post("/v1/datasets", files={"file": ("d.npz", dataset_bytes())})
    dataset = r.json()
    model = upload_model(client)
    job = client.post("/v1/jobs", json={"model_id": model["id"],
                                        "dataset_id": dataset["id"]}).json()
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 409
    client.post(f"/v1/jobs/{job['id']}/cancel")
    client.delete(f"/v1/jobs/{job['id']}")
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404


def test_a_blob_another_team_shares_stays(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(auth_enabled=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        keys = KeysRepo(ctx_of(app).db)
        a = {"X-API-Key": keys.issue(team="a").key}
        b = {"X-API-Key": keys.issue(team="b").key}
        model_a = upload_model(client, mlp_bytes(seed=9), headers=a)
        model_b = upload_model(client, mlp_bytes(seed=9), headers=b)
        assert model_a["id"] != model_b["id"] and model_a["sha256"] == model_b["sha256"]
        assert client.delete(f"/v1/models/{model_a['id']}", headers=b).status_code == 404
        assert client.delete(f"/v1/models/{model_a['id']}", headers=a).status_code == 204
        blob = Path(ctx_of(app).settings.storage_path) / f"blobs/{model_b['sha256']}.onnx"
        assert blob.is_file()  # team b's model still needs it
        assert client.get(f"/v1/models/{model_b['id']}", headers=b).status_code == 200
        assert client.delete(f"/v1/models/{model_b['id']}", headers=b).status_code == 204
        assert not blob.exists()


def test_retention_removes_old_jobs_then_their_unused_uploads(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    app = create_app(make_settings(retention_days=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        ctx = ctx_of(app)
        old_model = upload_model(client, mlp_bytes(seed=1))
        new_model = upload_model(client, mlp_bytes(seed=2))
        old_job = submit(client, old_model["id"])
        recent_job = submit(client, new_model["id"])
        running = submit(client, old_model["id"])
        for job in (old_job, recent_job):
            finish_job(app, job["id"], tmp_path / job["id"])
        ctx.jobs.claim(running["id"])
        long_ago = utcnow() - timedelta(days=3)
        with ctx.db.session() as session:
            session.execute(update(Job).where(Job.id.in_([old_job["id"], running["id"]]))
                            .values(finished_at=long_ago, created_at=long_ago))
            session.execute(update(Model).values(created_at=long_ago))
            session.commit()
        removed = sweep_retention(ctx)
        assert removed["job"] == 1 and removed["model"] == 0  # the running job keeps it
        assert client.get(f"/v1/jobs/{old_job['id']}").status_code == 404
        assert client.get(f"/v1/jobs/{recent_job['id']}").status_code == 200
        assert client.get(f"/v1/jobs/{running['id']}").json()["status"] == "running"
        ctx.jobs.fail(running["id"], "internal_error", "test")
        with ctx.db.session() as session:
            session.execute(update(Job).where(Job.id == running["id"])
                            .values(finished_at=long_ago))
            session.commit()
        assert sweep_retention(ctx)["job"] == 1
        assert sweep_retention(ctx)["model"] == 1  # free now, and old
        assert client.get(f"/v1/models/{old_model['id']}").status_code == 404
        assert client.get(f"/v1/models/{new_model['id']}").status_code == 200


def test_retention_off_removes_nothing(client: TestClient, tmp_path: Path) -> None:
    ctx = ctx_of(client.app)  # type: ignore[arg-type]
    job = submit(client, upload_model(client)["id"])
    finish_job(client.app, job["id"], tmp_path / "w")  # type: ignore[arg-type]
    with ctx.db.session() as session:
        session.execute(update(Job).values(finished_at=utcnow() - timedelta(days=3650)))
        session.commit()
    assert sweep_retention(ctx) == {"job": 0, "model": 0, "dataset": 0, "session": 0,
                                  "pending_upload": 0}
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
