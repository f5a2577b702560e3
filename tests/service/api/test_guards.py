"""The API's guards: /metrics behind a token while auth is on, failed key checks limited per
address, /readyz from background probes without hosts or ports, and the revoke-key command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from service.api import readiness as readiness_module
from service.api.app import create_app
from service.api.readiness import FIRST_RESULTS_WAIT_S
from service.store.keys import KeysRepo
from tests.service.conftest import SettingsFactory, free_port
from tests.service.helpers import ctx_of


def test_metrics_need_the_metrics_token_while_auth_is_on(make_settings: SettingsFactory) -> None:
    closed = create_app(make_settings(auth_enabled=True))
    with TestClient(closed, raise_server_exceptions=False) as client:
        issued = KeysRepo(ctx_of(closed).db).issue(team="vision")
        r = client.get("/metrics", headers={"Authorization": f"Bearer {issued.key}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "metrics_token_not_set"
    app = create_app(make_settings(auth_enabled=True, metrics_token="scrape-me"))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and "quantserve_jobs" in r.text


def test_failed_key_checks_are_limited_per_address(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(auth_enabled=True, auth_failures_per_minute=5))
    with TestClient(app, raise_server_exceptions=False) as client:
        issued = KeysRepo(ctx_of(app).db).issue(team="nlp")
        codes = [client.get("/v1/jobs", headers={"X-API-Key": f"qs_guess_{i}"}).status_code
                 for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        limited = client.get("/v1/jobs", headers={"X-API-Key": issued.key})
        assert limited.status_code == 429  # the address, not the key, is limited
        assert limited.json()["error"]["code"] == "too_many_auth_failures"
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.get("/healthz").status_code == 200


def test_readyz_answers_at_once_and_names_no_host(make_settings: SettingsFactory) -> None:
    port = free_port()
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{port}/none"
    app = create_app(make_settings(database_url=dead, storage="s3",
                                   s3_endpoint_url=f"http://127.0.0.1:{port}"), migrate=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        for call in range(3):
            started = time.monotonic()
            r = client.get("/readyz")
            # the first may wait FIRST_RESULTS_WAIT_S for the probes; none waits on them
            assert time.monotonic() - started < (FIRST_RESULTS_WAIT_S if call == 0 else 0) + 1.0
            assert r.status_code == 503
            checks = r.json()["error"]["details"]["checks"]
            assert checks["database"] == "unavailable" and checks["storage"] == "unavailable"
            assert "127.0.0.1" not in r.text and str(port) not in r.text


def test_readyz_does_not_wait_on_frozen_dependencies(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Database and S3 endpoint accept connections and never answer: their probes hang for
    their timeouts (20 s), while /readyz answers at the end of its first-results wait and
    /healthz, asked during that wait, before it ends. The wait is made long here (6 s), so
    that a pause of the whole process (a full garbage collection of a long test session, a
    loaded machine) cannot pass for the event loop waiting on /readyz."""
    wait_s = 6.0
    monkeypatch.setattr(readiness_module, "FIRST_RESULTS_WAIT_S", wait_s)
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(64)  # never accepted: the kernel completes handshakes, nobody answers
        port = frozen.getsockname()[1]
        settings = make_settings(
            database_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/none",
            storage="s3", s3_endpoint_url=f"http://127.0.0.1:{port}",
            db_connect_timeout_s=20.0, storage_timeout_s=20.0)
        app = create_app(settings, migrate=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            with ThreadPoolExecutor(1) as pool:
                started = time.monotonic()
                first = pool.submit(client.get, "/readyz")
                time.sleep(0.1)
                health = client.get("/healthz")
                health_s = time.monotonic() - started - 0.1
                waiting = not first.done()
                ready = first.result(timeout=30)
                ready_s = time.monotonic() - started
            assert health.status_code == 200 and waiting and health_s < wait_s / 2, health_s
            assert ready.status_code == 503 and wait_s - 1.0 < ready_s < wait_s + 1.0, ready_s
            checks = ready.json()["error"]["details"]["checks"]
            assert checks["database"] == "unavailable" and checks["storage"] == "unavailable"
            started = time.monotonic()
            again = client.get("/readyz")
            assert again.status_code == 503 and time.monotonic() - started < 0.5


def test_revoke_key_command(make_settings: SettingsFactory, tmp_path: object) -> None:
    settings = make_settings(auth_enabled=True)
    app = create_app(settings)
    env = {"QUANTSERVE_DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin"}
    keys = KeysRepo(ctx_of(app).db)
    by_id, by_key = keys.issue(team="a"), keys.issue(team="b")

    def revoke(arg: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "service.cli", "revoke-key", arg],
                              env=env, capture_output=True, text=True, timeout=60)

    done = revoke(by_id.key_id)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"key_id": by_id.key_id, "revoked": True}
    assert revoke(by_key.key).returncode == 0
    again = revoke(by_id.key_id)
    assert again.returncode == 1 and "revoked already" in again.stderr
    with TestClient(app, raise_server_exceptions=False) as client:
        for issued in (by_id, by_key):
            r = client.get("/v1/jobs", headers={"X-API-Key": issued.key})
            assert r.status_code == 401
