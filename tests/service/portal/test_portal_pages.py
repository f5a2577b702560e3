"""The portal's pages without a browser: what they render, their content policy, signing in
with a key (a cookie session), CSRF on the API for cookie sessions, and team scoping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.store.keys import KeysRepo
from service.store.records import ArtifactRecord
from tests.service.conftest import SettingsFactory
from tests.service.helpers import ctx_of, finish_job, submit, upload_model


def _csrf(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert match is not None
    return match.group(1)


def test_pages_render_under_a_strict_policy(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    job = client.post("/v1/jobs", json={"model_id": model["id"], "name": "first <b>job</b>",
                                        "labels": {"team": "vision"}}).json()
    finish_job(client.app, job["id"], tmp_path / "w")  # type: ignore[arg-type]
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    for path in ("/ui/", "/ui/new", f"/ui/jobs/{job['id']}", f"/ui/new?from={job['id']}",
                 f"/ui/compare?id={job['id']}", "/ui/rows?label=team=vision"):
        r = client.get(path)
        assert r.status_code == 200, path
        policy = r.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self';" in policy, path
        assert "frame-ancestors 'none'" in policy
        assert "<script>" not in r.text and " style=" not in r.text, path
        assert "first &lt;b&gt;job&lt;/b&gt;" in r.text or path in ("/ui/new",), path
    assert client.get("/ui/login", follow_redirects=False).status_code == 303  # auth is off
    r = client.get("/ui/jobs/nope")
    assert r.status_code == 404 and "Not found" in r.text
    r = client.get("/ui/?label=-bad")
    assert "is not key or key=value" in r.text


def test_the_form_is_the_quantizers_table(client: TestClient) -> None:
    html = client.get("/ui/new").text
    table = client.get("/v1/quantizers").json()
    for parameter in table["parameters"]:
        assert f'id="f-{parameter["name"]}"' in html, parameter["name"]
    assert '<label for="f-bits">Bits</label>' in html
    assert "From 1 to 16. Default: 8." in html
    for label in ("Model file", "Evaluation set", "Job kind"):
        assert re.search(rf'<label for="[^"]+">{label}</label>', html), label
    assert '<button type="submit" id="submit-button">Submit</button>' in html


def test_comparison_draws_a_sweep_s_rows(client: TestClient, tmp_path: Path) -> None:
    model = upload_model(client)
    ctx = ctx_of(client.app)  # type: ignore[arg-type]
    sweep = client.post("/v1/jobs", json={"model_id": model["id"], "kind": "sweep",
                                          "name": "grid", "spec": {"grid": {"bits": [3, 4]}}})
    sweep_id = sweep.json()["id"]
    claimed = ctx.jobs.claim(sweep_id)
    assert claimed is not None
    rows = [{"spec": {"method": "uniform", "bits": b}, "bits_per_weight": b,
             "entropy_bits_per_weight": b - 0.2, "sqnr_db": 5.0 * b,
             "accuracy": {"quantized": {"top1": 0.5 + b / 10}}} for b in (3, 4)]
    empty: list[ArtifactRecord] = []
    assert ctx.jobs.succeed(sweep_id, {"kind": "sweep", "rows": rows}, empty,
                            attempt=claimed.attempts)
    quantize = submit(client, model["id"])
    finish_job(client.app, quantize["id"], tmp_path / "w")  # type: ignore[arg-type]
    html = client.get(f"/ui/compare?id={sweep_id}&id={quantize['id']}&id=gone").text
    assert "sweep over bits: 3/4" in html and "No job gone for your team." in html
    assert html.count('<svg viewBox="0 0 640 320" role="img"') == 2
    assert html.count("<circle cx=") >= 2 * 2  # the sweep's two rows in each figure
    assert "grid: 2.8 bits, SQNR (dB) 15" in html


@pytest.fixture
def secured(make_settings: SettingsFactory) -> Iterator[TestClient]:
    app = create_app(make_settings(auth_enabled=True))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _sign_in(client: TestClient, key: str) -> str:
    r = client.post("/ui/login", data={"api_key": key, "next": "/ui/new"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/new"
    cookie = r.headers["set-cookie"]
    assert "qs_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    return _csrf(client.get("/ui/").text)


def test_signing_in_with_a_key(secured: TestClient) -> None:
    keys = KeysRepo(ctx_of(secured.app).db)  # type: ignore[arg-type]
    r = secured.get("/ui/jobs/x?a=1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%2Fx%3Fa%3D1"
    r = secured.post("/ui/login", data={"api_key": "qs_wrong"})
    assert r.status_code == 401 and "not valid" in r.text
    assert secured.get("/v1/jobs").status_code == 401
    issued = keys.issue(team="vision")
    r = secured.post("/ui/login", data={"api_key": issued.key, "next": "//evil.example/x"},
                     follow_redirects=False)
    assert r.headers["location"] == "/ui/"  # never off the portal
    csrf = _csrf(secured.get("/ui/").text)
    assert csrf and issued.key not in secured.cookies.get("qs_session", "")
    assert secured.get("/v1/jobs").status_code == 200  # the cookie signs API reads
    model = secured.post("/v1/models", files={"file": ("m.onnx", b"x")})
    assert model.status_code == 403 and model.json()["error"]["code"] == "csrf_failed"
    ok = upload_model(secured, headers={"X-CSRF-Token": csrf})
    job = secured.post("/v1/jobs", json={"model_id": ok["id"]}, headers={"X-CSRF-Token": csrf})
    assert job.status_code == 202
    assert secured.post("/v1/jobs", json={"model_id": ok["id"]},
                        headers={"X-CSRF-Token": "forged"}).status_code == 403
    keys.revoke(issued.key_id)  # a revoked key ends its sessions at once
    r = secured.get("/v1/jobs")
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
    assert secured.get("/ui/", follow_redirects=False).status_code == 303


def test_a_team_sees_only_its_own_jobs_in_the_portal(secured: TestClient) -> None:
    keys = KeysRepo(ctx_of(secured.app).db)  # type: ignore[arg-type]
    theirs = {"X-API-Key": keys.issue(team="nlp").key}
    model = upload_model(secured, headers=theirs)
    other = secured.post("/v1/jobs", json={"model_id": model["id"], "name": "nlp secret"},
                         headers=theirs).json()
    csrf = _sign_in(secured, keys.issue(team="vision").key)
    assert "nlp secret" not in secured.get("/ui/").text
    assert secured.get(f"/ui/jobs/{other['id']}").status_code == 404
    assert "No job" in secured.get(f"/ui/compare?id={other['id']}").text
    assert secured.get(f"/v1/jobs/{other['id']}").status_code == 404
    assert secured.get(f"/ui/new?from={other['id']}").status_code == 404
    r = secured.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.headers["location"] == "/ui/login"
    assert secured.get("/v1/jobs").status_code == 401
