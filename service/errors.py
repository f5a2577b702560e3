"""The service's errors and the one exception handler that turns any error into JSON.

Every answer that is not a success has the body ``{"error": {"code", "message", "details"}}``.
``ServiceError`` subclasses carry their HTTP status; the core's ``QuantError`` codes map to
statuses in ``QUANT_ERROR_STATUS``; FastAPI's request validation becomes 422 with the field
named; storage or database failures are 503; anything else is a 500 ``internal_error``
(logged with its traceback) — which a caller's input must never reach.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from quantcore.errors import QuantError
from service.store.storage import StorageError

log = logging.getLogger("quantserve.errors")


class ServiceError(Exception):
    """Base of the service's own errors: ``status_code`` and a stable ``code``."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers


class BadRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class InvalidTransitionError(ConflictError):
    """A job status change that ``JobStatus`` does not allow (cancel a finished job, ...)."""

    code = "invalid_transition"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class UnprocessableError(ServiceError):
    status_code = 422
    code = "invalid_request"


class IdempotencyKeyReusedError(UnprocessableError):
    """An Idempotency-Key sent again with a different request than the first time."""

    code = "idempotency_key_reused"


class RateLimitedError(ServiceError):
    status_code = 429
    code = "rate_limited"


class DependencyUnavailableError(ServiceError):
    status_code = 503
    code = "unavailable"


class BrokerUnavailableError(DependencyUnavailableError):
    """The task broker cannot be reached; ``service.queue.enqueue`` raises it (the API's
    503)."""

    code = "broker_unavailable"


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
        status, body, headers = exc.status_code, error_body(exc.code, exc.message, exc.details), \
            exc.headers
    elif isinstance(exc, QuantError):
        status = QUANT_ERROR_STATUS.get(exc.code, 422)
        body = error_body(exc.code, exc.message, exc.details)
    elif isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        status = 422
        body = error_body("invalid_request", _validation_message(errors), _plain_errors(errors))
    elif isinstance(exc, StorageError):
        log.error("storage failed on %s %s: %s", request.method, request.url.path, exc)
        status = 503
        body = error_body("storage_unavailable", f"storage is unavailable: {exc}")
    elif isinstance(exc, SQLAlchemyOperationalError):
        log.error("database failed on %s %s: %s", request.method, request.url.path, exc.orig)
        status = 503
        body = error_body("database_unavailable", "the database is unavailable; retry later")
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
        SQLAlchemyOperationalError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_class, handle_error)
