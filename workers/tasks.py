"""The job task: a thin shell that moves a job row along while the core does the work.

The task receives only the job id. ``execute_job`` claims the row (queued → running), copies
the model and dataset from storage into a temporary folder, calls
``quantcore.run_job`` with a progress callback that writes stage and progress to the row,
stores the artifacts with their sha256 and marks the job succeeded. Every way out leaves the
row final and saying why:

- a ``QuantError`` → failed with the core's code and message; a storage failure (an upload
  gone, S3 down) → failed ``storage_error``;
- the soft time limit → failed ``timeout``; the hard limit (the pool process is killed) →
  failed ``timeout`` from ``JobTask.on_failure``, which runs in the worker's main process;
- a cancel → the next progress call sees the row is no longer running and stops the job;
- anything else → failed ``internal_error`` with the exception named, and re-raised so the
  worker logs the traceback.

Redelivery is safe: a job already final is skipped; a job found running (its worker died)
is claimed again, run from the start, and its artifacts, stored under fixed keys, replace the
partial ones — one set at the end. Every write of a run names its attempt, so an older run
still going elsewhere is refused and stops at its next progress call. A job whose worker
keeps dying (out of memory, say) is failed ``worker_lost`` by ``JobsRepo.claim`` after
``MAX_ATTEMPTS`` instead of cycling for ever.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from quantcore import JobInput, JobKind, QuantError, Stage, run_job
from service.logging import job_context
from service.queue.celery_app import TASK_NAME
from service.settings import Settings, get_settings
from service.store.artifacts import store_artifacts
from service.store.db import Database
from service.store.jobs import ClaimedJob, JobsRepo
from service.store.storage import Storage, StorageError, make_storage

log = logging.getLogger("quantserve.worker")

TMP_PREFIX = "quantserve-job-"
# Seconds between two progress writes of the same stage (a stage change is always written).
PROGRESS_INTERVAL_S = 0.5


class JobStopped(Exception):
    """The job row left ``running`` while the job ran (cancelled), or a newer attempt claimed
    it: stop the work."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # final already (or made final by the attempt cap), or unknown id


@dataclass(frozen=True, kw_only=True)
class WorkerContext:
    """What a worker process needs to run jobs; one per process (never shared over fork)."""

    settings: Settings
    repo: JobsRepo
    storage: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        return cls(
            settings=settings,
            repo=JobsRepo(Database(settings.database_url)),
            storage=make_storage(settings),
        )


_contexts: dict[tuple[int, str], WorkerContext] = {}
_contexts_lock = threading.Lock()

# After a hard time limit, Celery runs ``JobTask.on_failure`` in the worker's main process
# on billiard's timeout thread, while the main thread may be forking the replacement pool
# process. A fork taken while that thread holds a lock (ours, SQLAlchemy's, SQLite's) leaves
# the lock held for ever in the child, which then hangs at its first job. So a fork waits
# until such database work is done, and the child starts with fresh locks.
_fork_guard = threading.Lock()


def _after_fork_in_child() -> None:
    global _contexts_lock, _fork_guard
    _contexts_lock = threading.Lock()
    _fork_guard = threading.Lock()


os.register_at_fork(
    before=lambda: _fork_guard.acquire(),
    after_in_parent=lambda: _fork_guard.release(),
    after_in_child=_after_fork_in_child,
)


def worker_context(settings: Settings) -> WorkerContext:
    """The context of this process for ``settings`` (keyed by pid: a forked pool process
    builds its own database pool rather than inheriting its parent's sockets)."""
    key = (os.getpid(), settings.model_dump_json())
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = WorkerContext.from_settings(settings)
        return ctx


class ProgressWriter:
    """The ``ProgressCallback`` handed to the core: writes stage and progress to the row.

    Writes are throttled to one per ``interval_s`` within a stage; a new stage and the end
    of a stage (fraction 1) are always written. Raises ``JobStopped`` when the row is no
    longer running or no longer ``attempt``'s, which unwinds ``run_job`` at its next progress
    call.
    """

    def __init__(
        self,
        repo: JobsRepo,
        job_id: str,
        *,
        attempt: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.clock = clock
        self.stage: Stage | None = None
        self.last_write = float("-inf")
        self.writes = 0

    def __call__(self, stage: Stage, fraction: float) -> None:
        now = self.clock()
        due = stage != self.stage or fraction >= 1.0 or now - self.last_write >= self.interval_s
        if not due:
            return
        self.stage, self.last_write = stage, now
        self.writes += 1
        if not self.repo.set_progress(self.job_id, Stage(stage).value, fraction,
                                      attempt=self.attempt):
            raise JobStopped(f"job {self.job_id} is no longer running attempt {self.attempt}")


def _fetch_inputs(job: ClaimedJob, storage: Storage, folder: Path) -> JobInput:
    model_path = folder / f"model{job.model_suffix}"
    storage.download(job.model_key, model_path)
    dataset_path = None
    if job.dataset_key is not None:
        dataset_path = folder / "dataset.npz"
        storage.download(job.dataset_key, dataset_path)
    return JobInput(
        kind=JobKind(job.kind), model_path=model_path, spec=job.spec, dataset_path=dataset_path
    )


def _run_claimed(job: ClaimedJob, ctx: WorkerContext) -> Outcome:
    limits = ctx.settings.job_limits()
    progress = ProgressWriter(ctx.repo, job.id, attempt=job.attempts)
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{job.id}-") as tmp:
        folder = Path(tmp)
        job_input = _fetch_inputs(job, ctx.storage, folder)
        out_dir = folder / "out"
        out_dir.mkdir()
        output = run_job(job_input, out_dir, progress=progress, limits=limits)
        if not ctx.repo.is_running(job.id, attempt=job.attempts):
            raise JobStopped(f"job {job.id} was cancelled or claimed again before attempt "
                             f"{job.attempts} stored its artifacts")
        records = store_artifacts(ctx.storage, job.id, output.artifacts)
    if not ctx.repo.succeed(job.id, output.report, records, attempt=job.attempts):
        # Cancelled, or claimed by a newer attempt, meanwhile. The files stay: their keys are
        # the job's fixed keys, which a later attempt of the same job may have written too
        # (same inputs, same bytes).
        raise JobStopped(f"job {job.id} was cancelled or claimed again before attempt "
                         f"{job.attempts} stored its result")
    return Outcome.SUCCEEDED


def _remove_leftovers(job_id: str) -> None:
    # A worker killed on this machine left its temporary folder (a model-sized download).
    for folder in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{job_id}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def execute_job(job_id: str, ctx: WorkerContext) -> Outcome:
    """Run one job to a final state; safe to call again for the same id (see module doc)."""
    with job_context(job_id):
        return _execute(job_id, ctx)


def _execute(job_id: str, ctx: WorkerContext) -> Outcome:
    extra: dict[str, Any] = {}
    job = ctx.repo.claim(job_id)
    if job is None:
        log.info("job %s has nothing to run (final already or unknown)", job_id, extra=extra)
        return Outcome.SKIPPED
    extra["attempt"] = job.attempts
    if job.attempts > 1:
        _remove_leftovers(job_id)
    log.info("job %s started (attempt %d)", job_id, job.attempts, extra=extra)
    started = time.monotonic()
    try:
        outcome = _run_claimed(job, ctx)
    except JobStopped as exc:
        log.info("job %s stopped: %s", job_id, exc, extra=extra)
        return Outcome.CANCELLED
    except QuantError as exc:
        ctx.repo.fail(job_id, exc.code, exc.message, attempt=job.attempts)
        log.info("job %s failed: %s: %s", job_id, exc.code, exc.message, extra=extra)
        return Outcome.FAILED
    except StorageError as exc:
        ctx.repo.fail(job_id, "storage_error", f"the job's files could not be moved: {exc}",
                      attempt=job.attempts)
        log.warning("job %s failed on storage: %s", job_id, exc, extra=extra)
        return Outcome.FAILED
    except SoftTimeLimitExceeded:
        limit = ctx.settings.job_soft_time_limit_s
        ctx.repo.fail(
            job_id,
            "timeout",
            f"the job ran past its time limit of {limit:g} s (QUANTSERVE_JOB_SOFT_TIME_LIMIT_S)",
            attempt=job.attempts,
        )
        log.warning("job %s timed out after %.1f s", job_id, limit, extra=extra)
        return Outcome.FAILED
    except Exception as exc:
        ctx.repo.fail(
            job_id,
            "internal_error",
            f"the worker failed unexpectedly: {type(exc).__name__}: {exc}",
            attempt=job.attempts,
        )
        raise
    log.info("job %s succeeded in %.2f s", job_id, time.monotonic() - started, extra=extra)
    return outcome


class JobTask(Task):
    """Marks the job failed when the task dies outside ``execute_job``'s reach.

    Celery calls ``on_failure`` in the worker's main process after a hard time limit killed
    the pool process; for failures ``execute_job`` already recorded, ``fail`` is a no-op
    because the row is final.
    """

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if not isinstance(job_id, str):
            return
        if isinstance(exc, TimeLimitExceeded):
            limit = get_settings().job_time_limit_s
            code = "timeout"
            message = (
                f"the job ran past its hard time limit of {limit:g} s and was killed "
                "(QUANTSERVE_JOB_TIME_LIMIT_S)"
            )
        else:
            code = "internal_error"
            message = f"the worker failed unexpectedly: {type(exc).__name__}: {exc}"
        with _fork_guard:  # see _fork_guard
            worker_context(get_settings()).repo.fail(job_id, code, message)


@shared_task(base=JobTask, name=TASK_NAME, bind=True)
def run_job_task(self: Task, job_id: str) -> str:
    """The Celery task: only the job id travels through the broker."""
    return execute_job(job_id, worker_context(get_settings())).value
