"""What routes depend on: the app's context, the caller, and lookups that 404 when missing.

``Annotated`` aliases (``CtxDep``, ``PrincipalDep``, ``JobDep``) keep each route's signature
short and write lookup-or-404 once. A resource of another team is answered exactly like an
unknown id (404), so ids of other teams cannot be probed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from service.api.auth import Authenticator, Principal, RateLimiter, enforce_rate_limit
from service.api.prometheus import Metrics
from service.errors import NotFoundError
from service.settings import Settings
from service.store.db import Database
from service.store.jobs import JobsRepo
from service.store.models import Dataset, Job, Model
from service.store.storage import Storage


@dataclass(frozen=True, kw_only=True)
class AppContext:
    settings: Settings
    db: Database
    storage: Storage
    repo: JobsRepo
    authenticator: Authenticator
    limiter: RateLimiter | None
    metrics: Metrics
    spool_dir: Path


async def get_ctx(request: Request) -> AppContext:
    # async: a plain def dependency would cost a round trip through the thread pool.
    ctx: AppContext = request.app.state.ctx
    return ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]


def _principal(request: Request, ctx: AppContext) -> Principal:
    principal = ctx.authenticator.authenticate(request.headers)
    identity = principal.key_id or f"addr:{request.client.host if request.client else '-'}"
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


def get_job_or_404(job_id: str, ctx: CtxDep, principal: PrincipalDep) -> Job:
    with ctx.db.session() as session:
        job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == principal.team_id))
    if job is None:
        raise NotFoundError(f"job {job_id!r} not found", details={"job_id": job_id})
    return job


def get_model_or_404(model_id: str, ctx: CtxDep, principal: PrincipalDep) -> Model:
    return load_model(ctx, principal, model_id)


def get_dataset_or_404(dataset_id: str, ctx: CtxDep, principal: PrincipalDep) -> Dataset:
    return load_dataset(ctx, principal, dataset_id)


def load_model(ctx: AppContext, principal: Principal, model_id: str) -> Model:
    with ctx.db.session() as session:
        model = session.scalar(
            select(Model).where(Model.id == model_id, Model.team_id == principal.team_id)
        )
    if model is None:
        raise NotFoundError(f"model {model_id!r} not found", details={"model_id": model_id})
    return model


def load_dataset(ctx: AppContext, principal: Principal, dataset_id: str) -> Dataset:
    with ctx.db.session() as session:
        dataset = session.scalar(
            select(Dataset).where(Dataset.id == dataset_id, Dataset.team_id == principal.team_id)
        )
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id!r} not found",
                            details={"dataset_id": dataset_id})
    return dataset


JobDep = Annotated[Job, Depends(get_job_or_404)]
ModelDep = Annotated[Model, Depends(get_model_or_404)]
DatasetDep = Annotated[Dataset, Depends(get_dataset_or_404)]
