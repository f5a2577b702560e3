"""Webhooks against a real HTTP receiver on 127.0.0.1: the signed POST of a finished job,
retries with backoff, giving up, and the hosts and addresses that are refused."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import webhooks
from service.api.app import create_app
from service.api.webhooks import allowance, is_internal
from tests.service.conftest import SettingsFactory
from tests.service.helpers import finish_job, upload_model


class Receiver:
    """An HTTP server that records every POST and answers the next scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append({"headers": {k.lower(): v for k, v in
                                                      self.headers.items()},
                                          "body": body, "at": time.monotonic(),
                                          "path": self.path})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hooks/quantserve?x=1"


def _wait(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def hooked(make_settings: SettingsFactory) -> Iterator[TestClient]:
    settings = make_settings(webhook_allowed_hosts="127.0.0.1,*.example.com",
                             webhook_backoff_s=0.3, webhook_poll_interval_s=0.05,
                             webhook_max_attempts=3, webhook_timeout_s=5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _job_with_callback(client: TestClient, url: str) -> dict[str, Any]:
    model = upload_model(client)
    r = client.post("/v1/jobs", json={"model_id": model["id"], "callback_url": url,
                                      "name": "hooked"})
    assert r.status_code == 202, r.text
    return r.json()


def _app(client: TestClient) -> FastAPI:
    return client.app  # type: ignore[return-value]


def test_a_finished_job_is_posted_signed_and_retried(hooked: TestClient,
                                                     tmp_path: Path) -> None:
    with Receiver([500, 503, 200]) as receiver:
        job = _job_with_callback(hooked, receiver.url())
        assert job["callback_url"] == receiver.url()
        assert hooked.get(f"/v1/jobs/{job['id']}/webhook").json()["state"] == "waiting"
        time.sleep(0.3)
        assert receiver.received == []  # nothing until the job is final
        finish_job(_app(hooked), job["id"], tmp_path / "w")
        _wait(lambda: len(receiver.received) == 3)
        time.sleep(0.2)
        assert len(receiver.received) == 3  # delivered: no fourth
    secret = hooked.get("/v1/webhooks/secret").json()["secret"]
    first, _, last = receiver.received
    for n, hit in enumerate(receiver.received, start=1):
        headers = hit["headers"]
        assert hit["path"] == "/hooks/quantserve?x=1"
        assert headers["content-type"] == "application/json"
        assert headers["host"] == f"127.0.0.1:{receiver.port}"
        assert headers["x-quantserve-event"] == "job.succeeded"
        assert headers["x-quantserve-attempt"] == str(n)
        assert headers["x-quantserve-delivery"] == first["headers"]["x-quantserve-delivery"]
        timestamp = headers["x-quantserve-timestamp"]
        mac = hmac.new(secret.encode(), timestamp.encode() + b"." + hit["body"], hashlib.sha256)
        assert hmac.compare_digest(headers["x-quantserve-signature"], "sha256=" + mac.hexdigest())
        assert abs(int(timestamp) - time.time()) < 60
    body = json.loads(last["body"])
    assert body["event"] == "job.succeeded" and body["job"]["id"] == job["id"]
    assert body["job"]["status"] == "succeeded" and body["job"]["name"] == "hooked"
    assert body["delivery_id"] == first["headers"]["x-quantserve-delivery"]
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.received, receiver.received[1:],
                                              strict=False)]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # backoff doubles
    state = hooked.get(f"/v1/jobs/{job['id']}/webhook").json()
    assert state["state"] == "delivered" and state["attempts"] == 3
    assert state["last_status"] == 200 and state["delivered_at"]


def test_a_receiver_that_keeps_failing_is_given_up(hooked: TestClient, tmp_path: Path) -> None:
    with Receiver([500] * 10) as receiver:
        job = _job_with_callback(hooked, receiver.url())
        hooked.post(f"/v1/jobs/{job['id']}/cancel")  # a cancelled job is announced too
        _wait(lambda: hooked.get(f"/v1/jobs/{job['id']}/webhook").json()["state"] == "failed")
        assert len(receiver.received) == 3  # webhook_max_attempts
        assert receiver.received[0]["headers"]["x-quantserve-event"] == "job.cancelled"
    state = hooked.get(f"/v1/jobs/{job['id']}/webhook").json()
    assert state["attempts"] == 3 and state["last_status"] == 500
    assert state["last_error"] == "answered 500"


def test_rotating_the_secret_changes_the_signature_key(hooked: TestClient) -> None:
    first = hooked.get("/v1/webhooks/secret").json()["secret"]
    assert first.startswith("whsec_")
    assert hooked.get("/v1/webhooks/secret").json()["secret"] == first
    second = hooked.post("/v1/webhooks/secret").json()["secret"]
    assert second != first and hooked.get("/v1/webhooks/secret").json()["secret"] == second


def test_callbacks_the_service_refuses(make_settings: SettingsFactory) -> None:
    settings = make_settings(webhook_allowed_hosts='["*", "hooks.internal.test"]')
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        model_id = upload_model(client)["id"]

        def code(url: str) -> str | None:
            r = client.post("/v1/jobs", json={"model_id": model_id, "callback_url": url})
            return None if r.status_code == 202 else r.json()["error"]["code"]

        for url in ("ftp://example.com/x", "http://user:pw@example.com/", "http:///nohost",
                    "http://example.com:0/", "not a url", "http://[::1"):
            assert code(url) == "invalid_callback_url", url
        for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://[::1]:80/",
                    "http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]/"):
            assert code(url) == "callback_not_allowed", url
        assert code("https://hooks.example.com/x") is None  # * : any public host
        assert code("http://hooks.internal.test/x") is None  # named
    with TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        model_id = upload_model(client)["id"]
        r = client.post("/v1/jobs", json={"model_id": model_id,
                                          "callback_url": "https://example.com/x"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "callback_not_allowed"


def test_a_name_that_resolves_inside_is_refused_at_delivery(make_settings: SettingsFactory,
                                                            tmp_path: Path) -> None:
    settings = make_settings(webhook_allowed_hosts="*", webhook_poll_interval_s=0.05)
    with Receiver([200]) as receiver, TestClient(create_app(settings)) as client:
        job = _job_with_callback(client, receiver.url("localhost"))
        finish_job(_app(client), job["id"], tmp_path / "w")
        _wait(lambda: client.get(f"/v1/jobs/{job['id']}/webhook").json()["state"] == "failed")
        state = client.get(f"/v1/jobs/{job['id']}/webhook").json()
        assert "internal address" in state["last_error"] and state["attempts"] == 1
        assert receiver.received == []


def test_address_classes() -> None:
    internal = ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
                "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fc00::1", "fe80::1",
                "::ffff:10.0.0.1", "::"]
    for text in internal:
        assert is_internal(ipaddress.ip_address(text)), text
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert not is_internal(ipaddress.ip_address(text)), text
    patterns = ["*.example.com", "hooks.ci.test", "127.0.0.1"]
    assert allowance("a.b.example.com", patterns) == "named"
    assert allowance("example.com", patterns) is None
    assert allowance("evil-example.com", patterns) is None
    assert allowance("HOOKS.ci.test.", patterns) == "named"
    assert allowance("other.test", [*patterns, "*"]) == "any"


def test_the_dispatcher_is_built_off_the_event_loop(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its HTTP client loads an SSL context (50-80 ms): built on the loop, that held every
    # request an API process answered as it started.
    where: list[str] = []
    build = webhooks.Dispatcher.__init__

    def init(self: webhooks.Dispatcher, *args: Any) -> None:
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        build(self, *args)

    monkeypatch.setattr(webhooks.Dispatcher, "__init__", init)
    with TestClient(create_app(make_settings(webhook_poll_interval_s=0.05))) as client:
        _wait(lambda: bool(where))
        assert client.get("/healthz").status_code == 200
    assert where == ["worker thread"]
