"""ASGI middleware that refuses what no route may see: a NUL character in the path, the query
string or a header.

PostgreSQL's text cannot hold NUL (``\\x00``): an id such as ``/v1/jobs/a%00b`` reached the
database and came back as a driver error, a 500 (and a dropped connection). Ids are text, so
the request is refused before any route runs: a path with NUL names nothing (404
``not_found``), a query string or a header with one is malformed (400 ``bad_request``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse

from service.api.errors import error_body


def _problem(scope: dict[str, Any]) -> tuple[int, str, str] | None:
    if "\x00" in scope.get("path", ""):
        return 404, "not_found", "no such path: it holds a NUL character"
    if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return 400, "bad_request", "the query string holds a NUL character (%00)"
    for name, value in scope.get("headers") or ():
        if b"\x00" in value:
            header = name.decode("latin-1")[:64]
            return 400, "bad_request", f"header {header!r} holds a NUL character"
    return None


class NulGuard:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = _problem(scope)
            if problem is not None:
                status, code, message = problem
                response = JSONResponse(error_body(code, message), status_code=status)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
