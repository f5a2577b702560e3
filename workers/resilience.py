"""What a job task does when a dependency does not answer: tell an outage from a refusal, and
retry through the outage with backoff, for a bounded time.

An outage is the database not answering (``DatabaseUnavailableError``) or the storage not
answering (a connection refused or timed out, a 5xx, a stream cut short); a refusal (an
object that does not exist, a full disk) is not retried. ``Retrier.call`` retries an outage
with backoff (0.5 s doubling up to 10 s) until its deadline, then raises ``DependencyDown``.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from service.errors import DatabaseUnavailableError

log = logging.getLogger("quantserve.worker")

T = TypeVar("T")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DependencyDown(Exception):
    """A dependency stayed unreachable for the whole retry window."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(f"{what}: {cause}")
        self.what = what
        self.cause = cause
        self.database = isinstance(cause, DatabaseUnavailableError)


def _storage_outage(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, (ConnectionError, HTTPClientError, socket.timeout, TimeoutError,
                        ConnectionRefusedError, ConnectionResetError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return int(status) >= 500 or code in {"SlowDown", "RequestTimeout", "ServiceUnavailable"}
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover - botocore depends on urllib3
        return False
    return isinstance(exc, Urllib3Error)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says a dependency did not
    answer, as opposed to refused."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailableError) or _storage_outage(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


class Retrier:
    """Retries outages with backoff until ``window_s`` after the first one it met."""

    def __init__(self, window_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.window_s = window_s
        self.clock = clock
        self.sleep = sleep
        self.retries = 0

    def call(self, what: str, fn: Callable[[], T]) -> T:
        deadline: float | None = None
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                now = self.clock()
                deadline = now + self.window_s if deadline is None else deadline
                if now + backoff > deadline:
                    raise DependencyDown(what, exc) from exc
                self.retries += 1
                log.warning("%s: dependency unavailable, retry in %.1f s: %s", what, backoff,
                            exc)
                self.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
