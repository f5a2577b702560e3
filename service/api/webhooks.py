"""Webhooks: a job's ``callback_url`` is told when the job ends.

- At submission, ``check_callback_url`` takes only an ``http``/``https`` URL without user
  info whose host ``webhook_allowed_hosts`` allows (422 ``callback_not_allowed`` otherwise).
- At delivery, the host is resolved and every address checked: loopback, private, link-local,
  shared, multicast, reserved and unspecified addresses (IPv4 and IPv6, IPv4-mapped too) are
  refused unless an entry other than ``*`` names the host. The POST then goes to the checked
  address itself (with the name kept for ``Host`` and TLS), so a second lookup cannot swap in
  another address; redirects are not followed.
- The body is ``{"event": "job.<status>", "delivery_id", "job": <the job>}``, signed:
  ``X-Quantserve-Signature: sha256=<hex HMAC-SHA256(team secret, "<timestamp>.<body>")>``
  with ``X-Quantserve-Timestamp`` (Unix seconds). A 2xx answer delivers it; anything else is
  retried after ``webhook_backoff_s`` doubling per attempt (at most an hour, plus up to 10 %
  jitter) until ``webhook_max_attempts``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool

from quantcore import __version__
from service.api.routers.common import job_public
from service.errors import UnprocessableError
from service.settings import Settings
from service.store.models import utcnow
from service.store.webhooks import DueDelivery, WebhooksRepo

log = logging.getLogger("quantserve.webhooks")

MAX_BACKOFF_S = 3600.0
ENROL_LOOKBACK = timedelta(days=1)  # jobs that finished while no API process ran
ENROL_MARGIN = timedelta(minutes=5)
ENROL_BATCH = 200
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Ranges no webhook reaches unless its host is named explicitly (beyond is_private & co.).
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class DeliveryRefused(Exception):
    """The callback's host may not be reached (permanent: not retried)."""


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.strip().lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == pattern.strip("[]")


def allowance(host: str, patterns: Sequence[str]) -> str | None:
    """``"named"`` when an entry names ``host`` (or its domain), ``"any"`` when only ``*``
    lets it through (public addresses only), ``None`` when it is not allowed."""
    host = host.lower().rstrip(".")
    if any(p.strip() != "*" and _host_matches(host, p) for p in patterns):
        return "named"
    return "any" if any(p.strip() == "*" for p in patterns) else None


def is_internal(address: IPAddress) -> bool:
    """Whether ``address`` is not a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_private or address.is_loopback or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED)
            or not address.is_global)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_callback_url(url: str, settings: Settings) -> None:
    """422 unless ``url`` is one the service may call (see the module's doc)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnprocessableError(f"callback_url is not a URL: {exc}",
                                 code="invalid_callback_url") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise UnprocessableError(
            "callback_url must be an http or https URL with a host and no user info",
            code="invalid_callback_url", details={"callback_url": url},
        )
    if port == 0:
        raise UnprocessableError("callback_url names port 0", code="invalid_callback_url")
    allowed = allowance(host, settings.webhook_allowed_hosts)
    literal = _literal(host)
    if allowed is None or (allowed == "any" and literal is not None and is_internal(literal)):
        raise UnprocessableError(
            f"callback_url host {host!r} is not allowed by this service "
            "(QUANTSERVE_WEBHOOK_ALLOWED_HOSTS)",
            code="callback_not_allowed", details={"host": host},
        )


async def resolve_checked(host: str, port: int, settings: Settings) -> IPAddress:
    """The address to POST to: ``host``'s, once every address it has passed the checks."""
    allowed = allowance(host, settings.webhook_allowed_hosts)
    if allowed is None:
        raise DeliveryRefused(f"host {host!r} is no longer allowed")
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise ConnectionError(f"{host!r} has no address")
    if allowed == "any":
        internal = [str(a) for a in addresses if is_internal(a)]
        if internal:
            raise DeliveryRefused(f"host {host!r} resolves to internal address(es) "
                                  f"{', '.join(internal)}; name it in "
                                  "QUANTSERVE_WEBHOOK_ALLOWED_HOSTS to allow it")
    return addresses[0]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with the team's secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempt: int, settings: Settings) -> float:
    """The delay after failed attempt ``attempt`` (1 for the first)."""
    base = min(MAX_BACKOFF_S, settings.webhook_backoff_s * 2 ** (attempt - 1))
    return base * (1.0 + random.uniform(0.0, 0.1))


def payload(due: DueDelivery) -> bytes:
    job = job_public(due.job).model_dump(mode="json")
    return json.dumps({"event": f"job.{due.job.status}", "delivery_id": due.delivery_id,
                       "job": job}, separators=(",", ":")).encode()


@dataclass(frozen=True, kw_only=True)
class Attempt:
    ok: bool
    status: int | None
    error: str
    permanent: bool = False


async def post(due: DueDelivery, settings: Settings, client: httpx.AsyncClient) -> Attempt:
    """One attempt at delivering ``due``."""
    url = httpx.URL(due.url)
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        address = await resolve_checked(host, port, settings)
    except DeliveryRefused as exc:
        return Attempt(ok=False, status=None, error=str(exc), permanent=True)
    except ConnectionError as exc:
        return Attempt(ok=False, status=None, error=str(exc))
    body = payload(due)
    timestamp = str(int(time.time()))
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": f"quantserve-webhooks/{__version__}",
        "X-Quantserve-Event": f"job.{due.job.status}",
        "X-Quantserve-Delivery": due.delivery_id,
        "X-Quantserve-Attempt": str(due.attempt),
        "X-Quantserve-Timestamp": timestamp,
        "X-Quantserve-Signature": signature(due.secret, timestamp, body),
    }
    target = url.copy_with(host=str(address))
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    try:
        response = await client.post(target, content=body, headers=headers,
                                     extensions=extensions)
    except httpx.HTTPError as exc:
        return Attempt(ok=False, status=None, error=f"{type(exc).__name__}: {exc}")
    if response.is_success:
        return Attempt(ok=True, status=response.status_code, error="")
    return Attempt(ok=False, status=response.status_code,
                   error=f"answered {response.status_code}")


class Dispatcher:
    """Delivers due webhooks; ``run_once`` is called by the API's background loop."""

    def __init__(self, repo: WebhooksRepo, settings: Settings) -> None:
        self.repo = repo
        self.settings = settings
        self.client = httpx.AsyncClient(timeout=settings.webhook_timeout_s,
                                        follow_redirects=False, trust_env=False)
        # Jobs that finished before this are not looked at again: a day back at start, then
        # the last look's time less a margin for finish times committed late.
        self.since = utcnow() - ENROL_LOOKBACK

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run_once(self) -> int:
        """Enrol newly finished jobs, then send every due delivery; returns how many."""
        started = utcnow()
        found = await run_in_threadpool(lambda: self.repo.enrol_finished(
            since=self.since, limit=ENROL_BATCH))
        if found < ENROL_BATCH:  # else more are waiting from the same time on
            self.since = max(self.since, started - ENROL_MARGIN)
        lease = self.settings.webhook_timeout_s * 2 + 30
        due = await run_in_threadpool(self.repo.claim_due, lease_s=lease)
        await asyncio.gather(*(self._deliver(d) for d in due))
        return len(due)

    async def _deliver(self, due: DueDelivery) -> None:
        result = await post(due, self.settings, self.client)
        extra = {"job_id": due.job.id, "attempt": due.attempt, "status": result.status}
        if result.ok:
            await run_in_threadpool(self.repo.delivered, due.job.id, due.attempt,
                                    result.status or 0)
            log.info("webhook delivered", extra=extra)
        elif result.permanent or due.attempt >= self.settings.webhook_max_attempts:
            await run_in_threadpool(lambda: self.repo.give_up(
                due.job.id, due.attempt, status=result.status, error=result.error))
            log.warning("webhook given up: %s", result.error, extra=extra)
        else:
            delay = backoff_s(due.attempt, self.settings)
            await run_in_threadpool(lambda: self.repo.retry_later(
                due.job.id, due.attempt, status=result.status, error=result.error,
                delay_s=delay))
            log.info("webhook failed, retry in %.1f s: %s", delay, result.error, extra=extra)
