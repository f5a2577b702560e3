"""Accepting jobs: check references and spec, write the rows, then hand them to the broker.

Order matters: the row is committed before the task is published (a worker may claim it at
once), and only the job id travels through the broker.

When the broker refuses a job (it is down), the row is deleted again and the caller gets
503 ``broker_unavailable``: nothing was accepted, so a retry — with the same
``Idempotency-Key`` or without — submits afresh, and no job is left ``queued`` with no
message to run it. In a batch, the jobs published before the failure stay accepted and are
listed in the error's details.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from quantcore import jobs as core
from service.auth import Principal
from service.deps import AppContext, load_dataset, load_model
from service.errors import BrokerUnavailableError
from service.jobs_repo import JobStatus
from service.models import Job
from service.schemas import JobCreate

log = logging.getLogger("quantserve.submission")


@dataclass(frozen=True, kw_only=True)
class Submitted:
    job: Job
    replayed: bool  # an earlier submission with the same Idempotency-Key


def _checked(ctx: AppContext, principal: Principal, create: JobCreate) -> dict[str, Any]:
    load_model(ctx, principal, create.model_id)
    if create.dataset_id is not None:
        load_dataset(ctx, principal, create.dataset_id)
    return core.validate_job(create.kind, create.spec, ctx.settings.job_limits())


def _existing(ctx: AppContext, team_id: str, key: str) -> Job | None:
    with ctx.db.session() as session:
        return session.scalar(
            select(Job).where(Job.team_id == team_id, Job.idempotency_key == key)
        )


async def submit_jobs(
    ctx: AppContext,
    principal: Principal,
    creates: list[JobCreate],
    idempotency_key: str | None = None,
) -> list[Submitted]:
    """Create and enqueue jobs; all are checked before any is written.

    With ``idempotency_key``, job ``i`` of the call is keyed ``key`` (a single job) or
    ``key#i`` (a batch); a key seen before returns that job instead of a new one. The work
    (database and broker round trips) runs in a worker thread: a database that is busy
    (SQLite locked by a worker's write) must not stall the event loop.
    """
    return await run_in_threadpool(_submit, ctx, principal, creates, idempotency_key)


def _submit(
    ctx: AppContext,
    principal: Principal,
    creates: list[JobCreate],
    idempotency_key: str | None,
) -> list[Submitted]:
    keys: list[str | None] = [None] * len(creates)
    if idempotency_key:
        keys = [idempotency_key if len(creates) == 1 else f"{idempotency_key}#{i}"
                for i in range(len(creates))]
    specs = [_checked(ctx, principal, create) for create in creates]
    results: list[Submitted] = []
    fresh: list[Job] = []
    for create, spec, key in zip(creates, specs, keys, strict=True):
        if key is not None and (found := _existing(ctx, principal.team_id, key)) is not None:
            results.append(Submitted(job=found, replayed=True))
            continue
        job = Job(team_id=principal.team_id, kind=create.kind.value,
                  status=JobStatus.QUEUED.value, progress=0.0, attempts=0,
                  model_id=create.model_id, dataset_id=create.dataset_id, spec=spec,
                  idempotency_key=key)
        with ctx.db.session() as session:
            session.add(job)
            try:
                session.commit()
            except IntegrityError:  # the same key submitted concurrently: theirs won
                session.rollback()
                found = _existing(ctx, principal.team_id, key) if key else None
                if found is None:
                    raise
                results.append(Submitted(job=found, replayed=True))
                continue
        results.append(Submitted(job=job, replayed=False))
        fresh.append(job)
    _enqueue_all(ctx, fresh)
    return results


def _enqueue_all(ctx: AppContext, jobs: list[Job]) -> None:
    from workers.enqueue import enqueue_job

    for i, job in enumerate(jobs):
        try:
            task_id = enqueue_job(job.id, ctx.settings)
        except BrokerUnavailableError as exc:
            refused = [j.id for j in jobs[i:]]
            with ctx.db.session() as session:
                session.execute(delete(Job).where(Job.id.in_(refused)))
                session.commit()
            log.warning("broker refused %d job(s): %s", len(refused), exc.message)
            raise BrokerUnavailableError(
                f"{exc.message}; the job was not accepted, retry later",
                details={"accepted": [j.id for j in jobs[:i]], "refused": refused},
                headers={"Retry-After": "5"},
            ) from exc
        ctx.repo.set_task_id(job.id, task_id)
        job.task_id = task_id
        log.info("job accepted", extra={"job_id": job.id, "kind": job.kind,
                                        "model_id": job.model_id, "task_id": task_id})
