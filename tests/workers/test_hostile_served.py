"""A hostile caller against the served API (uvicorn, PostgreSQL): every bad request is a 4xx
on the same keep-alive connection. A 500 from an unhandled error made uvicorn close the
connection after answering; NUL in an id reached PostgreSQL and did exactly that."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import bad_files as bf
from tests.service.helpers import mlp_bytes
from tests.workers.services import Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class Connection:
    """One HTTP/1.1 connection, requests sent one after another (keep-alive)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def request(self, method: str, path: str, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._receive()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, payload

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("the server closed the keep-alive connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    body = (b'--XB\r\nContent-Disposition: form-data; name="file"; filename="'
            + name.encode() + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data
            + b"\r\n--XB--\r\n")
    return body, "multipart/form-data; boundary=XB"


def test_bad_requests_are_4xx_on_one_keep_alive_connection(
    service_factory: Callable[[dict[str, str]], Service], postgres_url: str, tmp_path: Path
) -> None:
    service = service_factory({
        "QUANTSERVE_DATABASE_URL": postgres_url,
        "QUANTSERVE_BROKER_URL": f"sqla+sqlite:///{tmp_path}/broker.db",
        "QUANTSERVE_STORAGE": "local",
        "QUANTSERVE_STORAGE_PATH": str(tmp_path / "storage"),
        "QUANTSERVE_RATE_LIMIT_PER_MINUTE": "0",
    })
    service.start_api()
    # The model is uploaded on a connection of its own: after a successful multipart upload
    # the served API closed its keep-alive connection in about half the runs (also before
    # the hostile requests were added; not reproduced outside this harness), which is not
    # what this test is about.
    with service.client() as http:
        r = http.post("/v1/models", files={"file": ("m.onnx", mlp_bytes())})
        assert r.status_code == 201, r.text
        model_id = r.json()["id"]
    conn = Connection(service.port)
    try:
        hostile: list[tuple[str, str, bytes, str, int, str]] = [
            ("POST", "/v1/jobs", b'{"model_id": "%s", "spec": {"bits": NaN}}'
             % model_id.encode(), "application/json", 400, "bad_request"),
            ("POST", "/v1/jobs", b'{"model_id": "%s", "spec": {"min_elements": 1e400}}'
             % model_id.encode(), "application/json", 400, "bad_request"),
            ("POST", "/v1/jobs", b"[" * 100_000 + b"]" * 100_000, "application/json", 400,
             "bad_request"),
            ("POST", "/v1/jobs", b'{"model_id": "a\\u0000b"}', "application/json", 400,
             "bad_request"),
            ("GET", "/v1/jobs/a%00b", b"", "application/json", 404, "not_found"),
            ("GET", "/v1/models/%00", b"", "application/json", 404, "not_found"),
            ("GET", "/v1/jobs?model_id=%00", b"", "application/json", 400, "bad_request"),
            ("POST", "/v1/jobs", b'{"model_id": "%s", "kind": "search"}' % model_id.encode(),
             "application/json", 422, "invalid_dataset"),
            ("POST", "/v1/jobs", b'{"model_id": "%s", "kind": "sweep", "spec": {"grid": '
             b'{"bits": [2, 3]}, "points": 2}}' % model_id.encode(), "application/json", 422,
             "invalid_spec"),
            ("POST", "/v1/models", *_multipart("x.npz", bf.claiming_npz()), 413,
             "payload_too_large"),
            ("POST", "/v1/datasets", *_multipart("x.npz", bf.deflate_bomb(1 << 30)), 413,
             "payload_too_large"),
            ("POST", "/v1/models", *_multipart(
                "m.safetensors", bf.safetensors(b"[" * 50_000 + b"]" * 50_000)), 422,
             "invalid_model"),
        ]
        for method, path, payload, content_type, want, code in hostile:
            status, headers, body = conn.request(method, path, payload, content_type)
            assert (status, json.loads(body)["error"]["code"]) == (want, code), (path, body)
            assert headers.get("connection", "").lower() != "close", (path, headers)
        status, _, _ = conn.request("GET", "/healthz")
        assert status == 200
    finally:
        conn.close()
    log = service.logs()
    assert "Exception in ASGI application" not in log and "internal_error" not in log, log
