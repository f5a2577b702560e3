"""The one exception handler of the API: any error to ``{"error": {"code", "message",
"details"}}`` with its HTTP status. No other module maps errors to responses.

- ``ServiceError`` (``service.errors``) carries its own status and code; a database that does
  not answer arrives as ``DatabaseUnavailableError`` (503 ``database_unavailable``).
- The core's ``QuantError`` codes map to statuses in ``QUANT_ERROR_STATUS``: all of them
  describe what the caller sent.
- FastAPI's request validation becomes 422 ``invalid_request`` with the fields named.
- A storage failure is 503 ``storage_unavailable``; a disk with no space left (storage or
  the upload spool) is 507 ``storage_full``, wherever it is met.
- Starlette's own answers (unknown path, wrong method) keep their status.
- Anything else is a 500 ``internal_error``, logged with its traceback — which a caller's input
  must never reach.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from quantcore import QuantError
from service.errors import DatabaseUnavailableError, ServiceError
from service.store.storage import StorageError, StorageFullError, is_no_space

log = logging.getLogger("quantserve.errors")

# The core's error codes; all of them describe what the caller sent.
QUANT_ERROR_STATUS: dict[str, int] = {
    "invalid_spec": 422,
    "invalid_tensor": 422,
    "invalid_model": 422,
    "unsupported_model": 422,
    "unsafe_external_data": 422,
    "no_weights": 422,
    "invalid_dataset": 422,
    "invalid_package": 422,
    # A file that declares (or inflates to) more than an input limit allows.
    "payload_too_large": 413,
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _validation_message(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _plain_errors(errors: list[Any]) -> list[dict[str, Any]]:
    # Pydantic puts exception objects into "ctx"; keep only what JSON can carry.
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in errors
    ]


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The one handler: any exception to ``{"error": {...}}`` with its status."""
    headers: dict[str, str] | None = None
    if isinstance(exc, ServiceError):
        if isinstance(exc, DatabaseUnavailableError):
            log.error("database failed on %s %s: %s", request.method, request.url.path,
                      exc.reason)
        status, body, headers = exc.status_code, error_body(exc.code, exc.message, exc.details), \
            exc.headers
    elif isinstance(exc, QuantError):
        status = QUANT_ERROR_STATUS.get(exc.code, 422)
        body = error_body(exc.code, exc.message, exc.details)
    elif isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        status = 422
        body = error_body("invalid_request", _validation_message(errors), _plain_errors(errors))
    elif isinstance(exc, StorageFullError) or is_no_space(exc):
        log.error("no space left on %s %s: %s", request.method, request.url.path, exc)
        status = 507
        body = error_body("storage_full", "the service has no space left to store this; "
                          "retry later", {"reason": str(exc)})
        headers = {"Retry-After": "60"}
    elif isinstance(exc, StorageError):
        log.error("storage failed on %s %s: %s", request.method, request.url.path, exc)
        status = 503
        body = error_body("storage_unavailable", f"storage is unavailable: {exc}")
    elif isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if status == 404:
            message = f"no such path: {request.url.path}"
        body = error_body(code, message)
        headers = dict(exc.headers) if exc.headers else None
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status = 500
        body = error_body("internal_error", "internal error; the service logged the cause")
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handler(app: FastAPI) -> None:
    for exc_class in (
        ServiceError,
        QuantError,
        StorageError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_class, handle_error)
