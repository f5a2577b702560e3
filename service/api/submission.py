"""Accepting jobs: check references and spec, write the rows, then hand them to the broker.

Order matters: the row is committed before the task is published (a worker may claim it at
once), and only the job id travels through the broker. The Celery task id is chosen before
the insert and written with the row, so a job costs one write to the job table and one
publish.

When the broker refuses a job (it is down), the row is deleted again and the caller gets
503 ``broker_unavailable``: nothing was accepted, so a retry — with the same
``Idempotency-Key`` or without — submits afresh, and no job is left ``queued`` with no
message to run it. In a batch, the jobs published before the failure stay accepted and are
listed in the error's details.

The reads and the insert of one call share one database connection and go through SQLAlchemy
Core (a submission is the API's hottest write; the ORM's unit of work is not needed for it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from quantcore.jobs import run as core
from service.api.auth import Principal
from service.api.deps import AppContext
from service.api.schemas import JobCreate
from service.errors import BrokerUnavailableError, IdempotencyKeyReusedError, NotFoundError
from service.store.jobs import JobStatus
from service.store.models import Dataset, Job, Model, new_id, utcnow

log = logging.getLogger("quantserve.submission")


@dataclass(frozen=True, kw_only=True)
class Submitted:
    job: Job
    replayed: bool  # an earlier submission with the same Idempotency-Key


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


def _lookups(entity: type[Model] | type[Dataset]) -> tuple[Select[Any], Select[Any]]:
    """The team's rows of ``entity`` among some ids: by one id, and by a list of them."""
    owned = entity.team_id == bindparam("team")
    return (select(entity.id).where(entity.id == bindparam("id"), owned),
            select(entity.id).where(entity.id.in_(bindparam("ids", expanding=True)), owned))


# Built once: building a statement and its cache key costs more than running it on SQLite.
_MODELS = _lookups(Model)
_DATASETS = _lookups(Dataset)
_BY_KEY = select(Job.__table__).where(Job.team_id == bindparam("team"),
                                      Job.idempotency_key == bindparam("key"))
_BY_KEYS = select(Job.__table__).where(
    Job.team_id == bindparam("team"), Job.idempotency_key.in_(bindparam("keys", expanding=True))
)
_INSERT = insert(Job)


def _owned(
    conn: Connection, lookups: tuple[Select[Any], Select[Any]], team_id: str,
    ids: Collection[str],
) -> set[str]:
    """Those of ``ids`` that are rows (of the table ``lookups`` query) of the team."""
    if not ids:
        return set()
    one, many = lookups
    if len(ids) == 1:
        return set(conn.scalars(one, {"id": next(iter(ids)), "team": team_id}))
    return set(conn.scalars(many, {"ids": list(ids), "team": team_id}))


def _checked(
    conn: Connection, ctx: AppContext, team_id: str, creates: Sequence[JobCreate]
) -> list[dict[str, Any]]:
    """The applied spec of each job; 404 for a model or dataset the team does not have,
    422 for a spec the core refuses, in the order of the jobs."""
    models = _owned(conn, _MODELS, team_id, {c.model_id for c in creates})
    datasets = _owned(conn, _DATASETS, team_id,
                      {c.dataset_id for c in creates if c.dataset_id is not None})
    specs = []
    for create in creates:
        if create.model_id not in models:
            raise NotFoundError(f"model {create.model_id!r} not found",
                                details={"model_id": create.model_id})
        if create.dataset_id is not None and create.dataset_id not in datasets:
            raise NotFoundError(f"dataset {create.dataset_id!r} not found",
                                details={"dataset_id": create.dataset_id})
        specs.append(core.validate_job(create.kind, create.spec, ctx.settings.job_limits()))
    return specs


def _existing(conn: Connection, team_id: str, keys: Collection[str]) -> dict[str, Job]:
    """The team's jobs submitted before with one of ``keys``, by key."""
    if not keys:
        return {}
    if len(keys) == 1:
        result = conn.execute(_BY_KEY, {"team": team_id, "key": next(iter(keys))})
    else:
        result = conn.execute(_BY_KEYS, {"team": team_id, "keys": list(keys)})
    return {row["idempotency_key"]: Job(**row) for row in result.mappings()}


def _same_request(earlier: Job, create: JobCreate, spec: dict[str, Any], key: str) -> Job:
    """``earlier``, the job first submitted with ``key``, if this request is the same one;
    a key sent again with another model, dataset, kind or applied spec is refused (422), so
    that a caller's mistake does not silently return an unrelated job."""
    # The applied spec, through JSON as the row stores it (tuples become lists).
    asked = {"kind": create.kind.value, "model_id": create.model_id,
             "dataset_id": create.dataset_id, "spec": json.loads(json.dumps(spec))}
    differs = [field for field, value in asked.items() if getattr(earlier, field) != value]
    if differs:
        raise IdempotencyKeyReusedError(
            f"Idempotency-Key {key!r} was first sent with another request (job {earlier.id}); "
            f"this one differs in {', '.join(differs)}: use a new key for a new job",
            details={"idempotency_key": key, "job_id": earlier.id, "differs": differs},
        )
    return earlier


def _new_job(team_id: str, create: JobCreate, spec: dict[str, Any], key: str | None) -> Job:
    from service.queue.enqueue import new_task_id

    return Job(id=new_id(), team_id=team_id, kind=create.kind.value,
               status=JobStatus.QUEUED.value, stage=None, progress=0.0, attempts=0,
               model_id=create.model_id, dataset_id=create.dataset_id, spec=spec,
               idempotency_key=key, task_id=new_task_id(), created_at=utcnow())


def _row(job: Job) -> dict[str, Any]:
    return {column: getattr(job, column) for column in _INSERTED}


_INSERTED = ("id", "team_id", "kind", "status", "stage", "progress", "attempts", "model_id",
             "dataset_id", "spec", "idempotency_key", "task_id", "created_at")


def _insert(conn: Connection, ctx: AppContext, jobs: Sequence[Job]) -> dict[str, Job]:
    """Commit the rows of ``jobs``; returns, by the id of a job not written, the job of a
    concurrent submission that took its Idempotency-Key first.

    One transaction for all of them; if a key was taken meanwhile, each row is written in a
    transaction of its own, so that the others are still accepted.
    """
    try:
        with ctx.db.write_lock:
            conn.execute(_INSERT, [_row(job) for job in jobs])
            conn.commit()
        return {}
    except IntegrityError:
        conn.rollback()
    taken: dict[str, Job] = {}
    for job in jobs:
        try:
            with ctx.db.write_lock:
                conn.execute(_INSERT, _row(job))
                conn.commit()
        except IntegrityError:  # the same key submitted concurrently: theirs won
            conn.rollback()
            key = job.idempotency_key
            found = _existing(conn, job.team_id, [key]).get(key) if key else None
            conn.rollback()
            if found is None:
                raise
            taken[job.id] = found
    return taken


def _submit(
    ctx: AppContext,
    principal: Principal,
    creates: list[JobCreate],
    idempotency_key: str | None,
) -> list[Submitted]:
    team_id = principal.team_id
    keys: list[str | None] = [None] * len(creates)
    if idempotency_key:
        keys = [idempotency_key if len(creates) == 1 else f"{idempotency_key}#{i}"
                for i in range(len(creates))]
    with ctx.db.engine.connect() as conn:
        specs = _checked(conn, ctx, team_id, creates)
        earlier = _existing(conn, team_id, [k for k in keys if k is not None])
        results: list[Submitted] = []
        for create, spec, key in zip(creates, specs, keys, strict=True):
            if key is not None and key in earlier:
                results.append(Submitted(job=_same_request(earlier[key], create, spec, key),
                                         replayed=True))
            else:
                results.append(Submitted(job=_new_job(team_id, create, spec, key),
                                         replayed=False))
        fresh = [s.job for s in results if not s.replayed]
        taken = _insert(conn, ctx, fresh) if fresh else {}
    if taken:
        requests = {s.job.id: (create, spec)
                    for s, create, spec in zip(results, creates, specs, strict=True)}
        try:
            results = [
                Submitted(job=_same_request(taken[s.job.id], *requests[s.job.id],
                                            key=str(s.job.idempotency_key)), replayed=True)
                if s.job.id in taken else s
                for s in results
            ]
        except IdempotencyKeyReusedError:
            _withdraw(ctx, [job.id for job in fresh if job.id not in taken])  # none published
            raise
        fresh = [job for job in fresh if job.id not in taken]
    _enqueue_all(ctx, fresh)
    return results


def _withdraw(ctx: AppContext, job_ids: list[str]) -> None:
    """Delete rows written but never published: no job stays queued with no message."""
    if job_ids:
        with ctx.db.write_lock, ctx.db.engine.begin() as conn:
            conn.execute(delete(Job).where(Job.id.in_(job_ids)))


def _enqueue_all(ctx: AppContext, jobs: list[Job]) -> None:
    from service.queue.enqueue import enqueue_job

    for i, job in enumerate(jobs):
        try:
            enqueue_job(job.id, ctx.settings, task_id=job.task_id)
        except BrokerUnavailableError as exc:
            refused = [j.id for j in jobs[i:]]
            _withdraw(ctx, refused)
            log.warning("broker refused %d job(s): %s", len(refused), exc.message)
            raise BrokerUnavailableError(
                f"{exc.message}; the job was not accepted, retry later",
                details={"accepted": [j.id for j in jobs[:i]], "refused": refused},
                headers={"Retry-After": "5"},
            ) from exc
        log.info("job accepted", extra={"job_id": job.id, "kind": job.kind,
                                        "model_id": job.model_id, "task_id": job.task_id})
