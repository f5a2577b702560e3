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

The reads and the insert of one call share one database connection
(``service.store.submissions.Submission``). Before it is opened, each job with a dataset has
its dataset checked against its model by the core (``check_dataset_fits``: names, dtypes,
shapes, labels, NaN, and every size against the input limits), so that a dataset that does
not fit is a 4xx at submission rather than a failed job; a search without a dataset is
refused too (422 ``invalid_dataset``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from quantcore import QuantError, check_dataset_fits, validate_job
from service.api.auth import Principal
from service.api.deps import AppContext
from service.api.schemas import JobCreate
from service.errors import BrokerUnavailableError, IdempotencyKeyReusedError, NotFoundError
from service.queue.enqueue import enqueue_job, new_task_id
from service.store.records import JobRecord
from service.store.storage import local_file
from service.store.submissions import Submission, new_job

log = logging.getLogger("quantserve.submission")


@dataclass(frozen=True, kw_only=True)
class Submitted:
    job: JobRecord
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


def _checked(
    submission: Submission, ctx: AppContext, creates: Sequence[JobCreate]
) -> list[dict[str, Any]]:
    """The applied spec of each job; 404 for a model or dataset the team does not have,
    422 for a spec the core refuses, in the order of the jobs."""
    models = submission.owned_models({c.model_id for c in creates})
    datasets = submission.owned_datasets(
        {c.dataset_id for c in creates if c.dataset_id is not None}
    )
    specs = []
    for create in creates:
        if create.model_id not in models:
            raise NotFoundError(f"model {create.model_id!r} not found",
                                details={"model_id": create.model_id})
        if create.dataset_id is not None and create.dataset_id not in datasets:
            raise NotFoundError(f"dataset {create.dataset_id!r} not found",
                                details={"dataset_id": create.dataset_id})
        specs.append(validate_job(create.kind, create.spec, ctx.settings.job_limits(),
                                  with_dataset=create.dataset_id is not None))
    return specs


def _check_datasets(ctx: AppContext, team_id: str, creates: Sequence[JobCreate]) -> None:
    """Each job's dataset against its model, in the order of the jobs: 404 for a model or
    dataset the team does not have, 422 for a spec the core refuses (cheap, so first), then
    the core's verdict on the files (422 ``invalid_dataset``, 413 past an input limit); a
    batch's message names the job. Each pair of files is checked once."""
    limits = ctx.settings.input_limits()
    checked: set[tuple[str, str]] = set()
    for i, create in enumerate(creates):
        if create.dataset_id is None or (create.model_id, create.dataset_id) in checked:
            continue
        model = ctx.uploads.model(create.model_id, team_id=team_id)
        if model is None:
            raise NotFoundError(f"model {create.model_id!r} not found",
                                details={"model_id": create.model_id})
        dataset = ctx.uploads.dataset(create.dataset_id, team_id=team_id)
        if dataset is None:
            raise NotFoundError(f"dataset {create.dataset_id!r} not found",
                                details={"dataset_id": create.dataset_id})
        validate_job(create.kind, create.spec, ctx.settings.job_limits(), with_dataset=True)
        with local_file(ctx.storage, model.storage_key, ctx.spool_dir) as model_path, \
                local_file(ctx.storage, dataset.storage_key, ctx.spool_dir) as dataset_path:
            try:
                check_dataset_fits(model_path, dataset_path, limits)
            except QuantError as exc:
                if len(creates) > 1:
                    exc.message = f"jobs[{i}]: {exc.message}"
                raise
        checked.add((create.model_id, create.dataset_id))


def _same_request(
    earlier: JobRecord, create: JobCreate, spec: dict[str, Any], key: str
) -> JobRecord:
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


def _new_job(
    team_id: str, create: JobCreate, spec: dict[str, Any], key: str | None
) -> JobRecord:
    return new_job(team_id=team_id, kind=create.kind.value, model_id=create.model_id,
                   dataset_id=create.dataset_id, spec=spec, idempotency_key=key,
                   task_id=new_task_id(), name=create.name, labels=create.labels or None,
                   callback_url=create.callback_url)


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
    _check_datasets(ctx, team_id, creates)
    with ctx.submissions.submission(team_id) as submission:
        specs = _checked(submission, ctx, creates)
        earlier = submission.existing([k for k in keys if k is not None])
        results: list[Submitted] = []
        for create, spec, key in zip(creates, specs, keys, strict=True):
            if key is not None and key in earlier:
                results.append(Submitted(job=_same_request(earlier[key], create, spec, key),
                                         replayed=True))
            else:
                results.append(Submitted(job=_new_job(team_id, create, spec, key),
                                         replayed=False))
        fresh = [s.job for s in results if not s.replayed]
        taken = submission.insert(fresh) if fresh else {}
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
            # None of them was published yet: no job may stay queued with no message.
            ctx.submissions.withdraw([job.id for job in fresh if job.id not in taken])
            raise
        fresh = [job for job in fresh if job.id not in taken]
    _enqueue_all(ctx, fresh)
    return results


def _enqueue_all(ctx: AppContext, jobs: list[JobRecord]) -> None:
    for i, job in enumerate(jobs):
        try:
            enqueue_job(job.id, ctx.settings, task_id=job.task_id)
        except BrokerUnavailableError as exc:
            refused = [j.id for j in jobs[i:]]
            ctx.submissions.withdraw(refused)
            log.warning("broker refused %d job(s): %s", len(refused), exc.message)
            raise BrokerUnavailableError(
                f"{exc.message}; the job was not accepted, retry later",
                details={"accepted": [j.id for j in jobs[:i]], "refused": refused},
                headers={"Retry-After": "5"},
            ) from exc
        log.info("job accepted", extra={"job_id": job.id, "kind": job.kind,
                                        "model_id": job.model_id, "task_id": job.task_id})
