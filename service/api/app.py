"""Assembles the API: ``create_app(settings) -> FastAPI``, and ``create_served_app`` for a
server process; nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from quantcore import __version__
from service.api.auth import Authenticator, make_rate_limiter
from service.api.background import run_background
from service.api.deps import AppContext
from service.api.errors import install_error_handler
from service.api.guards import NulGuard
from service.api.prometheus import Metrics, route_template
from service.api.readiness import Readiness
from service.api.routers import (
    datasets,
    events,
    health,
    jobs,
    metrics,
    models,
    pipelines,
    quantizers,
)
from service.api.routers.common import add_component_schemas
from service.api.routers.docs import install_docs
from service.api.uploads import sweep_stale_spools
from service.logging import configure_logging, request_id_var
from service.queue.enqueue import broker_errors, check_broker, producer_app
from service.settings import Settings, get_settings
from service.store.db import Database
from service.store.jobs import JobsRepo
from service.store.keys import KeysRepo
from service.store.pending import PendingUploadsRepo
from service.store.presign import make_presigner
from service.store.removal import RemovalRepo
from service.store.sessions import SessionsRepo
from service.store.stats import StatsRepo
from service.store.storage import S3Storage, make_storage
from service.store.submissions import SubmissionsRepo
from service.store.uploads import UploadsRepo
from service.store.webhooks import WebhooksRepo

log = logging.getLogger("quantserve.api")


class RequestObserver:
    """ASGI middleware: request id, latency histogram and one JSON log line per request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode()[:64]
        token = request_id_var.set(request_id or uuid.uuid4().hex[:16])
        start = time.perf_counter()
        status = 500

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", (request_id_var.get() or "").encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            extra = {"method": scope["method"], "path": scope["path"], "route": route,
                     "status": status, "duration_ms": round(seconds * 1000, 2),
                     "request_id": request_id_var.get()}
            job_id = (scope.get("path_params") or {}).get("job_id")
            if job_id:
                extra["job_id"] = job_id
            log.info("request", extra=extra)
            request_id_var.reset(token)


def build_context(settings: Settings, *, migrate: bool = True) -> AppContext:
    db = Database.from_settings(settings)
    if migrate:
        db.migrate()
    storage = make_storage(settings)
    if migrate and isinstance(storage, S3Storage):
        storage.ensure_bucket()
    spool_dir = Path(settings.storage_path).resolve() / ".spool"
    if migrate:
        sweep_stale_spools(spool_dir)
    sessions = SessionsRepo(db)
    readiness = Readiness(
        {"database": db.ping, "broker": lambda: check_broker(settings),
         "storage": storage.healthcheck},
        interval_s=settings.readiness_interval_s,
    )
    return AppContext(
        settings=settings, db=db, storage=storage, jobs=JobsRepo(db), uploads=UploadsRepo(db),
        submissions=SubmissionsRepo(db),
        authenticator=Authenticator(KeysRepo(db), enabled=settings.auth_enabled,
                                    sessions=sessions,
                                    failures_per_minute=settings.auth_failures_per_minute),
        limiter=make_rate_limiter(settings), metrics=Metrics(StatsRepo(db), settings),
        spool_dir=spool_dir, webhooks=WebhooksRepo(db), removal=RemovalRepo(db),
        sessions=sessions, readiness=readiness, pending=PendingUploadsRepo(db),
        presigner=make_presigner(settings, storage),
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs the readiness probes, the webhook deliveries and the retention sweep while the
    app serves (probes from the start: the first /readyz need not wait)."""
    ctx = app.state.ctx
    ctx.readiness.start()
    task = asyncio.create_task(run_background(ctx))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ctx.readiness.stop()


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """The API for ``settings`` (the environment's by default).

    ``migrate`` runs the database migrations and creates the S3 bucket if missing; the
    OpenAPI export turns it off to build the app without touching any storage.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    ctx = build_context(settings, migrate=migrate)
    app = FastAPI(
        title="quantserve",
        version=__version__,
        description="Post-training weight quantization as a service. Errors are "
        '`{"error": {"code", "message", "details"}}`.',
        docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_error_handler(app)
    for router in (models.router, datasets.router, jobs.router, events.router,
                   pipelines.router, quantizers.router, health.router, metrics.router):
        app.include_router(router)
    add_component_schemas(app, jobs.BODY_MODELS)
    install_docs(app)
    if settings.portal_enabled:
        from service.api.portal import install_portal

        install_portal(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key",
                           "If-None-Match", "If-Range", "Range", "X-Request-ID"],
            expose_headers=["Location", "ETag", "Retry-After", "X-Request-ID",
                            "Idempotent-Replayed", "Content-Range", "Accept-Ranges"],
            max_age=600,
        )
    app.add_middleware(NulGuard)
    app.add_middleware(RequestObserver, metrics=ctx.metrics)
    return app


def create_served_app(settings: Settings | None = None) -> FastAPI:
    """``create_app`` for a server process (``quantserve serve``, and uvicorn's factory with
    several workers).

    The publishing Celery app is built before the first request, with its transport's
    client library loaded (redis-py and kombu's transport: some hundred modules that the
    first publish would otherwise import), then every object made so far (modules, the app,
    the ORM's tables, Celery and kombu) is frozen out of the garbage collector's reach. A
    full collection otherwise walks all of them, about 100 ms during which no request moves,
    a few times a minute under load; frozen, it walks only what requests leave behind.
    """
    settings = settings or get_settings()
    app = create_app(settings)
    broker_errors(producer_app(settings))  # loads the transport, opens no connection
    gc.collect()
    gc.freeze()
    return app
