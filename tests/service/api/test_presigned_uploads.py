"""Presigned uploads: announce, PUT straight to S3 (moto's server), complete into a model.

The API runs on PostgreSQL with S3 storage; the PUTs are real HTTP requests to the presigned
URL. moto checks neither a presigned URL's signature nor the checksum header, so a lying
PUT reaches the bucket here and the complete step has to catch it.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.api.removal import sweep_retention
from service.store.keys import KeysRepo
from service.store.models import Model, PendingUpload, utcnow
from service.store.storage import S3Storage
from tests.bad_files import claiming_npz
from tests.service.api.conftest import UPLOAD_TTL_S
from tests.service.helpers import ctx_of, mlp_bytes, upload_model


def team(client: TestClient) -> dict[str, str]:
    db = ctx_of(client.app).db  # type: ignore[arg-type]
    key = KeysRepo(db).issue(team=f"t-{uuid.uuid4().hex[:8]}").key
    return {"Authorization": f"Bearer {key}"}


MODELS, DATASETS = "/v1/models/uploads", "/v1/datasets/uploads"


def announce(
    client: TestClient, headers: dict[str, str], data: bytes, name: str = "m.onnx", *,
    uploads: str = MODELS, **overrides: Any,
) -> httpx.Response:
    body = {
        "filename": name,
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **overrides,
    }
    return client.post(uploads, json=body, headers=headers)  # type: ignore[return-value]


def start(
    client: TestClient, headers: dict[str, str], data: bytes, name: str = "m.onnx", *,
    uploads: str = MODELS,
) -> dict[str, Any]:
    r = announce(client, headers, data, name, uploads=uploads)
    assert r.status_code == 201, r.text
    return dict(r.json())


def put(upload: dict[str, Any], data: bytes, headers: dict[str, str] | None = None) -> None:
    r = httpx.put(
        upload["url"], content=data, headers=upload["headers"] if headers is None else headers
    )
    assert r.status_code == 200, r.text


def complete(
    client: TestClient, headers: dict[str, str], upload_id: str, *, uploads: str = MODELS
) -> httpx.Response:
    return client.post(
        f"{uploads}/{upload_id}/complete",  # type: ignore[return-value]
        headers=headers,
    )


def pending_ids(client: TestClient) -> set[str]:
    with ctx_of(client.app).db.session() as session:  # type: ignore[arg-type]
        return set(session.scalars(select(PendingUpload.id)))


def keys(client: TestClient, prefix: str) -> list[str]:
    storage = ctx_of(client.app).storage  # type: ignore[arg-type]
    assert isinstance(storage, S3Storage)
    listed = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_presigned_upload_is_the_model_a_streamed_upload_makes(s3_client: TestClient) -> None:
    a, b = team(s3_client), team(s3_client)
    data = mlp_bytes(seed=31)
    upload = start(s3_client, a, data)
    assert upload["method"] == "PUT" and upload["size_bytes"] == len(data)
    query = parse_qs(urlsplit(upload["url"]).query)
    # SigV4, and the signature covers the size and the checksum: S3 refuses other bytes
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == [str(UPLOAD_TTL_S)]
    assert set(query["X-Amz-SignedHeaders"][0].split(";")) == {
        "content-length",
        "host",
        "x-amz-checksum-sha256",
    }
    assert upload["headers"]["Content-Length"] == str(len(data))
    put(upload, data)
    r = complete(s3_client, a, upload["id"])
    assert r.status_code == 201, r.text
    model = r.json()
    assert s3_client.get(f"/v1/models/{model['id']}", headers=a).json() == model
    streamed = upload_model(s3_client, data, headers=b)  # the same file, through the API
    drop = {"id", "created_at"}
    assert {k: v for k, v in model.items() if k not in drop} == {
        k: v for k, v in streamed.items() if k not in drop
    }
    with ctx_of(s3_client.app).db.session() as session:  # type: ignore[arg-type]
        rows = {
            row.id: row
            for row in session.scalars(
                select(Model).where(Model.id.in_([model["id"], streamed["id"]]))
            )
        }
        columns = (
            "sha256",
            "size_bytes",
            "format",
            "filename",
            "n_tensors",
            "n_params",
            "tensors",
            "storage_key",
        )
        assert [getattr(rows[model["id"]], c) for c in columns] == [
            getattr(rows[streamed["id"]], c) for c in columns
        ]
    storage = ctx_of(s3_client.app).storage  # type: ignore[arg-type]
    assert b"".join(storage.iter_bytes(f"blobs/{model['sha256']}.onnx")) == data
    assert keys(s3_client, "uploads/") == []  # the PUT object is gone once copied
    again = complete(s3_client, a, upload["id"])  # completing again: the same model
    assert again.status_code == 201 and again.json() == model
    assert upload_model(s3_client, data, headers=a)["id"] == model["id"]  # deduplicated
    # the same file announced again by the same team: its model, unread
    second = start(s3_client, a, data, name="other.onnx")
    put(second, data)
    assert complete(s3_client, a, second["id"]).json()["id"] == model["id"]
    assert keys(s3_client, "uploads/") == []


def test_announcements_that_cannot_be_uploaded_are_refused(s3_client: TestClient) -> None:
    a = team(s3_client)
    data = mlp_bytes(seed=32)
    before = pending_ids(s3_client)
    r = announce(s3_client, a, data, size_bytes=(4 << 20) + 1)  # the settings' 4 MiB limit
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert r.json()["error"]["details"] == {"limit_bytes": 4 << 20}
    r = announce(s3_client, a, data, name="m.pt")
    assert r.status_code == 415 and "m.pt" in r.json()["error"]["message"]
    for wrong in ({"sha256": "ab" * 31}, {"sha256": "zz" * 32}, {"size_bytes": 0}, {"extra": 1}):
        assert announce(s3_client, a, data, **wrong).status_code == 422, wrong
    r = announce(s3_client, a, data, name="bad\x00.onnx")
    assert r.status_code == 400
    assert keys(s3_client, "uploads/") == []
    assert pending_ids(s3_client) == before


def test_lying_callers_get_clear_answers(s3_client: TestClient) -> None:
    a, b = team(s3_client), team(s3_client)
    data = mlp_bytes(seed=33)
    upload = start(s3_client, a, data)
    r = complete(s3_client, a, upload["id"])  # nothing PUT yet
    assert r.status_code == 409 and r.json()["error"]["code"] == "upload_not_received"
    r = complete(s3_client, b, upload["id"])  # another team's upload
    assert r.status_code == 404 and r.json()["error"]["details"] == {"upload_id": upload["id"]}
    assert complete(s3_client, a, uuid.uuid4().hex).status_code == 404
    # another file of the same size (moto lets the bad checksum through)
    other = bytearray(data)
    other[-1] ^= 1
    put(upload, bytes(other))
    r = complete(s3_client, a, upload["id"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "upload_mismatch"
    assert "SHA-256" in r.json()["error"]["message"]
    assert keys(s3_client, "uploads/") == []
    # a longer file, without the signed Content-Length header
    put(
        upload,
        data + b"tail",
        headers={"x-amz-checksum-sha256": upload["headers"]["x-amz-checksum-sha256"]},
    )
    r = complete(s3_client, a, upload["id"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "upload_mismatch"
    assert f"is {len(data) + 4} bytes" in r.json()["error"]["message"]
    assert keys(s3_client, "uploads/") == []
    # the announced file, while the URL lasts, is accepted
    put(upload, data)
    r = complete(s3_client, a, upload["id"])
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_client.get(f"/v1/models/{r.json()['id']}", headers=b).status_code == 404


@pytest.mark.parametrize(
    "name, data", [("broken.onnx", b"this is not an onnx model"), ("claims.npz", claiming_npz())]
)
def test_a_file_that_fails_inspection_gets_the_streamed_error(
    s3_client: TestClient, name: str, data: bytes
) -> None:
    a = team(s3_client)
    streamed = s3_client.post("/v1/models", files={"file": (name, data)}, headers=a)
    assert streamed.status_code in (413, 422), streamed.text
    upload = start(s3_client, a, data, name=name)
    put(upload, data)
    r = complete(s3_client, a, upload["id"])
    assert r.status_code == streamed.status_code
    assert r.json()["error"] == streamed.json()["error"]
    assert keys(s3_client, "uploads/") == [] and keys(s3_client, "blobs/") == []
    assert complete(s3_client, a, upload["id"]).status_code == 404  # the upload is gone
    # ... but the purge still deletes a file PUT again while the URL lasts
    put(upload, data)
    past = utcnow() - timedelta(seconds=1)
    ctx = ctx_of(s3_client.app)  # type: ignore[arg-type]
    with ctx.db.session() as session:
        session.execute(
            update(PendingUpload).where(PendingUpload.id == upload["id"]).values(complete_by=past)
        )
        session.commit()
    assert sweep_retention(ctx)["pending_upload"] == 1
    assert keys(s3_client, "uploads/") == [] and upload["id"] not in pending_ids(s3_client)


def test_uploads_not_completed_in_time_are_forgotten(s3_client: TestClient) -> None:
    a = team(s3_client)
    ctx = ctx_of(s3_client.app)  # type: ignore[arg-type]
    data = mlp_bytes(seed=34)
    stale, fresh, done = (start(s3_client, a, data) for _ in range(3))
    for upload in (stale, fresh, done):
        put(upload, data)
    assert complete(s3_client, a, done["id"]).status_code == 201
    past = utcnow() - timedelta(seconds=1)
    with ctx.db.session() as session:
        session.execute(
            update(PendingUpload)
            .where(PendingUpload.id.in_([stale["id"], done["id"]]))
            .values(expires_at=past, complete_by=past)
        )
        session.commit()
    r = complete(s3_client, a, stale["id"])  # past its time: unknown
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert sorted(keys(s3_client, "uploads/")) == sorted(
        [f"uploads/{stale['id']}.onnx", f"uploads/{fresh['id']}.onnx"]
    )
    assert sweep_retention(ctx)["pending_upload"] == 2  # runs with retention_days=0 too
    assert keys(s3_client, "uploads/") == [f"uploads/{fresh['id']}.onnx"]
    assert {stale["id"], fresh["id"], done["id"]} & pending_ids(s3_client) == {fresh["id"]}
    assert complete(s3_client, a, fresh["id"]).status_code == 201


def test_local_storage_answers_why_there_are_no_presigned_uploads(client: TestClient) -> None:
    r = announce(client, {}, mlp_bytes())
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "presigned_uploads_unavailable"
    assert "storage=s3" in error["message"] and "POST /v1/models" in error["message"]
    r = complete(client, {}, uuid.uuid4().hex)
    assert r.status_code == 404
