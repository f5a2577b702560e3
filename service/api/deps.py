"""What routes depend on: the app's context, the caller, and lookups that 404 when missing.

``Annotated`` aliases (``CtxDep``, ``PrincipalDep``, ``JobDep``, ...) keep each route's
signature short. The three lookups ask the store for the caller's team's row and share one
404: a resource of another team is answered exactly like an unknown id, so ids of other teams
cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from service.api.auth import Authenticator, Principal, RateLimiter, enforce_rate_limit
from service.api.prometheus import Metrics
from service.api.readiness import Readiness
from service.errors import NotFoundError
from service.settings import Settings
from service.store.db import Database
from service.store.jobs import JobsRepo
from service.store.pending import PendingUploadsRepo
from service.store.presign import Presigner
from service.store.records import DatasetRecord, JobRecord, ModelRecord
from service.store.removal import RemovalRepo
from service.store.sessions import SessionsRepo
from service.store.storage import Storage
from service.store.submissions import SubmissionsRepo
from service.store.uploads import UploadsRepo
from service.store.webhooks import WebhooksRepo


@dataclass(frozen=True, kw_only=True)
class AppContext:
    settings: Settings
    db: Database
    storage: Storage
    jobs: JobsRepo
    uploads: UploadsRepo
    submissions: SubmissionsRepo
    authenticator: Authenticator
    limiter: RateLimiter | None
    metrics: Metrics
    spool_dir: Path
    webhooks: WebhooksRepo
    removal: RemovalRepo
    sessions: SessionsRepo
    readiness: Readiness
    pending: PendingUploadsRepo
    presigner: Presigner | None  # None: local storage, no presigned uploads


async def get_ctx(request: Request) -> AppContext:
    # async: a plain def dependency would cost a round trip through the thread pool.
    ctx: AppContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]


def _principal(request: Request, ctx: AppContext) -> Principal:
    address = request.client.host if request.client else "-"
    principal = ctx.authenticator.authenticate(request.headers, client=address,
                                               cookies=request.cookies, method=request.method)
    identity = principal.key_id or f"addr:{address}"
    enforce_rate_limit(ctx.limiter, identity)
    return principal


async def get_principal(request: Request, ctx: CtxDep) -> Principal:
    """Authenticate (when auth is on) and spend one token of the caller's rate limit.

    The key lookup (a database query) and a Redis limiter's round trip run in a worker
    thread; with neither (auth off, the in-process limiter or none) this runs on the event
    loop, as it only reads memory.
    """
    limiter = ctx.limiter
    if ctx.authenticator.enabled or (limiter is not None and limiter.blocking):
        return await run_in_threadpool(_principal, request, ctx)
    return _principal(request, ctx)


PrincipalDep = Annotated[Principal, Depends(get_principal)]

Found = TypeVar("Found", JobRecord, ModelRecord, DatasetRecord)


def found(what: str, key: str, record: Found | None) -> Found:
    """``record``, or 404 naming the ``what`` (job, model, dataset) that has no id ``key``."""
    if record is None:
        raise NotFoundError(f"{what} {key!r} not found", details={f"{what}_id": key})
    return record


def get_job_or_404(job_id: str, ctx: CtxDep, principal: PrincipalDep) -> JobRecord:
    return found("job", job_id, ctx.jobs.get(job_id, team_id=principal.team_id))


def get_model_or_404(model_id: str, ctx: CtxDep, principal: PrincipalDep) -> ModelRecord:
    return found("model", model_id, ctx.uploads.model(model_id, team_id=principal.team_id))


def get_dataset_or_404(dataset_id: str, ctx: CtxDep, principal: PrincipalDep) -> DatasetRecord:
    return found("dataset", dataset_id, ctx.uploads.dataset(dataset_id, team_id=principal.team_id))


JobDep = Annotated[JobRecord, Depends(get_job_or_404)]
ModelDep = Annotated[ModelRecord, Depends(get_model_or_404)]
DatasetDep = Annotated[DatasetRecord, Depends(get_dataset_or_404)]
