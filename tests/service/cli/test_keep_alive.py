"""The served API keeps an idle connection open for ``KEEP_ALIVE_S``: longer than a client's
own idle expiry, so that no client sends a request on a connection the server is closing (a
load of 50 clients, one request every 3 s each, got such a connection reset with uvicorn's
5 s default on a loaded machine)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.workers.conftest import embedded_env
from tests.workers.services import Service

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n"


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and the body its content-length gives); what came before
    the server closed the connection otherwise."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:"))  # fmt: skip
            if len(body) >= length:
                return data
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def _idle_then_request(service: Service, idle_s: float) -> bytes:
    """A second request on one connection after ``idle_s`` idle ("" if the server closed it)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(REQUEST)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(idle_s)
        try:
            sock.sendall(REQUEST)
            return _response(sock)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_an_idle_connection_lasts_keep_alive_s(
    service_factory: Callable[[dict[str, str]], Service], tmp_path: Path
) -> None:
    default = service_factory(embedded_env(tmp_path / "default"))
    default.start_api()
    short = service_factory({**embedded_env(tmp_path / "short"), "QUANTSERVE_KEEP_ALIVE_S": "1"})
    short.start_api()
    assert _idle_then_request(default, 6.0).startswith(b"HTTP/1.1 200")  # past uvicorn's 5 s
    assert _idle_then_request(short, 3.0) == b""
