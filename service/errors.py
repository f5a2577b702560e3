"""The service's own errors: plain exceptions that carry a stable ``code`` and the HTTP status
they stand for, shared by the store, the queue, the API and the CLI.

Nothing here knows about the web framework: ``service.api.errors`` is the one place that turns
an error (these, the core's ``QuantError``, a request that does not validate, anything else)
into the JSON answer ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


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


class DatabaseUnavailableError(DependencyUnavailableError):
    """The database did not answer (down, unreachable, locked past its timeout).

    The store raises it in place of the driver's error; ``reason`` is that error's text, for
    the logs: the caller is told only that the database is unavailable.
    """

    code = "database_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__("the database is unavailable; retry later")
        self.reason = reason


class BrokerUnavailableError(DependencyUnavailableError):
    """The task broker cannot be reached; ``service.queue.enqueue`` raises it (the API's
    503)."""

    code = "broker_unavailable"
