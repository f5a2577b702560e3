"""Artifacts answer HEAD and byte ranges; the report page is served inline under a strict
policy; Swagger UI and ReDoc load only the service's own files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.helpers import ctx_of, finish_job, submit, upload_model


@pytest.fixture
def finished(client: TestClient, tmp_path: Path) -> dict[str, Any]:
    job = submit(client, upload_model(client)["id"])
    folder = tmp_path / "w"
    finish_job(client.app, job["id"], folder)  # type: ignore[arg-type]
    return {"job": job, "bytes": (folder / "model.onnx").read_bytes()}


def test_head_tells_size_and_etag_without_a_body(client: TestClient,
                                                  finished: dict[str, Any]) -> None:
    url = f"/v1/jobs/{finished['job']['id']}/artifacts/model.onnx"
    got = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(finished["bytes"]))
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["accept-ranges"] == "bytes"
    assert client.head(url, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    assert client.head(f"/v1/jobs/{finished['job']['id']}/artifacts/nope").status_code == 404


@pytest.mark.parametrize(("header", "part"), [
    ("bytes=0-9", slice(0, 10)),
    ("bytes=10-", slice(10, None)),
    ("bytes=-7", slice(-7, None)),
    ("bytes=5-5", slice(5, 6)),
    ("bytes=100-999999999", slice(100, None)),
])
def test_a_single_range_is_206(client: TestClient, finished: dict[str, Any], header: str,
                               part: slice) -> None:
    data: bytes = finished["bytes"]
    r = client.get(f"/v1/jobs/{finished['job']['id']}/artifacts/model.onnx",
                   headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.content == data[part]
    start = part.start if part.start is None or part.start >= 0 else len(data) + part.start
    start = start or 0
    assert r.headers["content-range"] == f"bytes {start}-{start + len(r.content) - 1}/{len(data)}"
    assert r.headers["content-length"] == str(len(r.content))


def test_ranges_out_of_reach_or_not_understood(client: TestClient,
                                               finished: dict[str, Any]) -> None:
    data: bytes = finished["bytes"]
    url = f"/v1/jobs/{finished['job']['id']}/artifacts/model.onnx"
    r = client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.json()["error"]["code"] == "range_not_satisfiable"
    assert r.headers["content-range"] == f"bytes */{len(data)}"
    for ignored in ("bytes=0-1,4-5", "items=0-1", "bytes=9-3"):
        r = client.get(url, headers={"Range": ignored})
        assert r.status_code == 200 and r.content == data, ignored
    etag = client.head(url).headers["etag"]
    assert client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag}).status_code == 206
    stale = client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data
    head = client.head(url, headers={"Range": "bytes=0-3"})
    assert head.status_code == 206 and head.headers["content-length"] == "4"


def test_the_report_page_is_inline_and_runs_no_script(make_settings: SettingsFactory,
                                                      tmp_path: Path) -> None:
    app = create_app(make_settings(report_frame_ancestors="'self' https://wiki.example.com"))
    with TestClient(app) as client:
        job = submit(client, upload_model(client)["id"])
        r = client.get(f"/v1/jobs/{job['id']}/report.html")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_succeeded"
        finish_job(app, job["id"], tmp_path / "w")
        ctx = ctx_of(app)
        page = tmp_path / "w" / "report.html"
        page.write_text("<!doctype html><title>r</title><h1>Report</h1>")
        from service.store.artifacts import store_artifacts

        (record,) = store_artifacts(ctx.storage, job["id"], [page])
        with ctx.db.session() as session:
            from service.store.models import Artifact

            session.add(Artifact(job_id=job["id"], name=record.name,
                                 size_bytes=record.size_bytes, sha256=record.sha256,
                                 media_type=record.media_type, storage_key=record.storage_key))
            session.commit()
        r = client.get(f"/v1/jobs/{job['id']}/report.html")
        assert r.status_code == 200 and "<h1>Report</h1>" in r.text
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["content-disposition"].startswith("inline")
        policy = r.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy
        assert "sandbox" in policy
        assert "frame-ancestors 'self' https://wiki.example.com" in policy
        assert r.headers["x-content-type-options"] == "nosniff"


def test_docs_pages_load_the_service_s_own_files(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), (page, url)
            assert client.get(url).status_code == 200, url
        assert "cdn" not in html and "fonts.googleapis" not in html


def test_quantizers_check_answers_the_applied_spec_or_the_api_s_message(
    client: TestClient,
) -> None:
    ok = client.post("/v1/quantizers/check", json={"spec": {"bits": 3}})
    assert ok.status_code == 200 and ok.json()["spec"]["bits"] == 3
    bad = client.post("/v1/quantizers/check", json={"spec": {"bits": 40}})
    assert bad.status_code == 422
    assert bad.json()["error"] == {"code": "invalid_spec", "details": None,
                                   "message": "bits=40 must be between 1 and 16"}
    sweep = client.post("/v1/quantizers/check", json={"kind": "sweep", "spec": {"grid": {}}})
    assert sweep.status_code == 422 and sweep.json()["error"]["code"] == "invalid_spec"
