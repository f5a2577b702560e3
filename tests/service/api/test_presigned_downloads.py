"""Presigned downloads: the API signs a GET URL and the artifact comes straight from S3
(moto's server), byte for byte what the API itself serves; a local store says why not."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.api.conftest import DOWNLOAD_TTL_S
from tests.service.api.test_presigned_uploads import team
from tests.service.conftest import SettingsFactory
from tests.service.helpers import finish_job, submit, upload_model


def _finished(client: TestClient, headers: dict[str, str], tmp_path: Path) -> str:
    client.headers.update(headers)
    job = submit(client, upload_model(client)["id"])
    finish_job(client.app, job["id"], tmp_path / "w")  # type: ignore[arg-type]
    return str(job["id"])


def test_the_url_downloads_the_artifact_from_the_store(
    s3_client: TestClient, tmp_path: Path
) -> None:
    job = _finished(s3_client, team(s3_client), tmp_path)
    served = s3_client.get(f"/v1/jobs/{job}/artifacts/model.onnx")
    assert served.status_code == 200, served.text
    before = datetime.now(UTC)
    r = s3_client.get(f"/v1/jobs/{job}/artifacts/model.onnx/url")
    assert r.status_code == 200, r.text
    link = r.json()
    assert link["method"] == "GET" and link["name"] == "model.onnx"
    assert link["size_bytes"] == len(served.content)
    assert link["sha256"] == hashlib.sha256(served.content).hexdigest()
    expires = datetime.fromisoformat(link["expires_at"])
    assert 0 < (expires - before).total_seconds() <= DOWNLOAD_TTL_S + 5
    query = parse_qs(urlsplit(link["url"]).query)
    assert query["X-Amz-Expires"] == [str(DOWNLOAD_TTL_S)]
    assert "attachment" in query["response-content-disposition"][0]
    # Fetched with no API key: the signature is the authorisation.
    got = httpx.get(link["url"])
    assert got.status_code == 200, got.text
    assert got.content == served.content
    assert 'filename="model.onnx"' in got.headers["content-disposition"]
    part = httpx.get(link["url"], headers={"Range": "bytes=3-9"})
    assert part.status_code == 206 and part.content == served.content[3:10]


def test_another_teams_job_and_unknown_artifacts_are_not_found(
    s3_client: TestClient, tmp_path: Path
) -> None:
    job = _finished(s3_client, team(s3_client), tmp_path)
    assert s3_client.get(f"/v1/jobs/{job}/artifacts/nope.bin/url").status_code == 404
    other = team(s3_client)
    r = s3_client.get(f"/v1/jobs/{job}/artifacts/model.onnx/url", headers=other)
    assert r.status_code == 404, r.text
    anonymous = s3_client.get(f"/v1/jobs/{job}/artifacts/model.onnx/url",
                              headers={"Authorization": ""})
    assert anonymous.status_code == 401, anonymous.text


def test_a_local_store_has_no_presigned_downloads(client: TestClient, tmp_path: Path) -> None:
    job = _finished(client, {}, tmp_path)
    r = client.get(f"/v1/jobs/{job}/artifacts/model.onnx/url")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "presigned_downloads_unavailable"
    assert "/artifacts/model.onnx" in error["message"]
    assert client.get(f"/v1/jobs/{job}/artifacts/model.onnx").status_code == 200


def test_urls_name_the_stores_public_endpoint(
    make_settings: SettingsFactory, postgres_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    public = "http://store.example.test:9000"
    settings = make_settings(database_url=postgres_url, storage="s3", s3_endpoint_url=s3_endpoint,
                             s3_bucket=f"qs-{uuid.uuid4().hex[:8]}", auth_enabled=True,
                             s3_public_endpoint_url=public)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        # A team of its own: the database is shared, and the same model bytes uploaded by
        # the same team are one model, whose blob would be in another test's bucket.
        job = _finished(client, team(client), tmp_path)
        link = client.get(f"/v1/jobs/{job}/artifacts/report.json/url").json()
    assert link["url"].startswith(f"{public}/"), link
    assert link["media_type"] == "application/json"
