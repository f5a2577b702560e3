"""Who is calling, from the request's headers, and the per-key rate limit.

- A caller sends its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; the keys and
  their teams are in the store (``service.store.keys``, which also issues them).
- With ``auth_enabled`` off (the embedded default), every caller acts as the ``default``
  team and no key is needed.
- The rate limit is a token bucket per key (per client address with auth off): capacity
  ``rate_limit_per_minute``, refilled at that many tokens per minute. It lives in Redis when
  the broker is Redis (shared by all API replicas) and in the process otherwise. If Redis
  cannot be asked, requests pass: the broker check answers for Redis being down.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from service.settings import Settings
from service.store.keys import KeysRepo
from service.store.models import DEFAULT_TEAM_ID
from service.store.sessions import SessionsRepo

log = logging.getLogger("quantserve.auth")

MAX_BUCKETS = 10_000  # in-process buckets kept before the full ones are dropped


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: the team whose resources they see, and the key they used."""

    team_id: str
    key_id: str | None


ANONYMOUS = Principal(team_id=DEFAULT_TEAM_ID, key_id=None)

# The portal's sign-in: a cookie holding a session token (``service.store.sessions``). A
# request it authenticates that changes anything must also carry the session's CSRF token in
# ``X-CSRF-Token`` (the portal's pages hold it), which a page of another site cannot read.
SESSION_COOKIE = "qs_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its token, so nothing more is stored."""
    return hmac.new(session_token.encode(), b"quantserve-csrf", hashlib.sha256).hexdigest()[:40]


def key_from_headers(headers: Any) -> str | None:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    value = headers.get("x-api-key")
    if value:
        return str(value).strip()
    auth = headers.get("authorization") or ""
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Authenticator:
    """Checks keys (or a portal session's cookie); a client address whose checks failed
    ``failures_per_minute`` times in a minute gets 429 without a check (guessing keys is
    bounded), until its budget refills."""

    def __init__(self, keys: KeysRepo, *, enabled: bool, sessions: SessionsRepo | None = None,
                 failures_per_minute: int = 0) -> None:
        self.keys = keys
        self.enabled = enabled
        self.sessions = sessions
        self.failures = (InProcessRateLimiter(failures_per_minute) if failures_per_minute > 0
                         else None)

    def authenticate(self, headers: Any, client: str = "-", *,
                     cookies: Mapping[str, str] | None = None,
                     method: str = "GET") -> Principal:
        if not self.enabled:
            return ANONYMOUS
        failures = self.failures
        if failures is not None:
            left = failures.peek(client)
            if left < 1.0:
                retry = max(1, round((1.0 - left) / failures.rate + 0.5))
                raise RateLimitedError(
                    f"too many failed API key checks from this address; retry after {retry} s",
                    code="too_many_auth_failures", headers={"Retry-After": str(retry)},
                    details={"retry_after_s": retry},
                )
        try:
            return self._check(headers, cookies, method)
        except UnauthorizedError:
            if failures is not None:
                failures.hit(client)
            raise

    def _check(
        self, headers: Any, cookies: Mapping[str, str] | None, method: str
    ) -> Principal:
        key = key_from_headers(headers)
        token = (cookies or {}).get(SESSION_COOKIE)
        if key is None and token and self.sessions is not None:
            return self._session(token, headers, method)
        if key is None:
            raise UnauthorizedError(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                code="missing_api_key", headers={"WWW-Authenticate": "Bearer"},
            )
        owner = self.keys.owner(key)
        if owner is None or owner.revoked:
            raise UnauthorizedError(
                "the API key is not valid (unknown or revoked)",
                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
            )
        return Principal(team_id=owner.team_id, key_id=owner.key_id)

    def _session(self, token: str, headers: Any, method: str) -> Principal:
        assert self.sessions is not None
        owner = self.sessions.owner(token)
        if owner is None:
            raise UnauthorizedError(
                "the portal session has ended (expired, signed out or its key revoked); "
                "sign in again", code="session_expired", headers={"WWW-Authenticate": "Bearer"},
            )
        if method.upper() not in SAFE_METHODS and not hmac.compare_digest(
            str(headers.get(CSRF_HEADER) or ""), csrf_token(token)
        ):
            raise ForbiddenError("a request signed in by the portal's cookie must carry the "
                                 "page's X-CSRF-Token", code="csrf_failed")
        return Principal(team_id=owner.team_id, key_id=owner.key_id)


@dataclass(frozen=True, kw_only=True)
class RateDecision:
    allowed: bool
    remaining: int
    retry_after_s: float


class RateLimiter(Protocol):
    # True when ``hit`` waits on I/O (the caller then runs it off the event loop).
    blocking: bool

    def hit(self, identity: str) -> RateDecision: ...


class InProcessRateLimiter:
    """Token buckets in this process's memory (the embedded, single-process shape)."""

    blocking = False

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def peek(self, identity: str) -> float:
        """The tokens ``identity`` has now, without spending one."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(identity, (self.capacity, now))
            return min(self.capacity, tokens + (now - stamp) * self.rate)

    def hit(self, identity: str) -> RateDecision:
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[identity] = (tokens, now)
            if len(self._buckets) > MAX_BUCKETS:  # forget the buckets that are full again
                self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                                 if t + (now - at) * self.rate < self.capacity}
        return RateDecision(allowed=allowed, remaining=int(tokens),
                            retry_after_s=0.0 if allowed else (1.0 - tokens) / self.rate)


# KEYS[1] bucket; ARGV capacity, rate per second. Redis's own clock, so replicas agree.
_TOKEN_BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or capacity
local ts = tonumber(data[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(tokens)}
"""


class RedisRateLimiter:
    """Token buckets in Redis, shared by every API replica."""

    blocking = True

    def __init__(self, url: str, per_minute: int, *, prefix: str = "quantserve:ratelimit:") -> None:
        import redis

        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(_TOKEN_BUCKET_LUA)

    def hit(self, identity: str) -> RateDecision:
        import redis

        try:
            allowed, tokens = self.script(keys=[self.prefix + identity],
                                          args=[self.capacity, self.rate])
        except redis.RedisError as exc:
            log.warning("rate limit not checked, Redis unavailable: %s", exc)
            return RateDecision(allowed=True, remaining=0, retry_after_s=0.0)
        left = float(tokens)
        ok = bool(int(allowed))
        return RateDecision(allowed=ok, remaining=int(left),
                            retry_after_s=0.0 if ok else (1.0 - left) / self.rate)


def make_rate_limiter(settings: Settings) -> RateLimiter | None:
    """``None`` when the limit is off (``rate_limit_per_minute=0``)."""
    if settings.rate_limit_per_minute <= 0:
        return None
    if settings.broker_is_redis:
        return RedisRateLimiter(settings.broker_url, settings.rate_limit_per_minute)
    return InProcessRateLimiter(settings.rate_limit_per_minute)


def enforce_rate_limit(limiter: RateLimiter | None, identity: str) -> None:
    if limiter is None:
        return
    decision = limiter.hit(identity)
    if not decision.allowed:
        retry = max(1, round(decision.retry_after_s + 0.5))
        raise RateLimitedError(
            f"rate limit exceeded for this key; retry after {retry} s",
            headers={"Retry-After": str(retry)},
            details={"retry_after_s": retry},
        )
