"""The job task: a thin shell that moves a job row along while the core does the work.

The task receives only the job id. ``execute_job`` claims the row (queued → running), copies
the model and dataset from storage into a temporary folder, calls
``quantcore.run_job`` with a progress callback that writes stage and progress to the row,
stores the artifacts with their sha256 and marks the job succeeded. While it runs, a thread
writes a heartbeat on the row every ``heartbeat_interval_s`` (``workers.heartbeat``); the
reaper (``workers.reaper``) takes back jobs whose heartbeat went stale. Every way out leaves
the row final and saying why:

- a ``QuantError`` → failed with the core's code and message; a storage refusal (an upload
  gone) → failed ``storage_error``; a full disk, ``MemoryError`` or the memory limit →
  failed ``resource_limit`` (and the pool process is replaced);
- the soft time limit → failed ``timeout`` (raised outside database calls, see
  ``workers.soft_limit``); the hard limit (the pool process is killed) →
  failed ``timeout`` from ``JobTask.on_failure``, which runs in the worker's main process;
- a cancel → the next progress call (or heartbeat) sees the row is no longer running and
  stops the job;
- anything else → failed ``internal_error`` with the exception named, and re-raised so the
  worker logs the traceback.

A dependency that does not answer is not a way out: every database and storage call is
retried with backoff for ``dependency_retry_s`` (``workers.resilience``). Past that, a storage
outage fails the job ``storage_unavailable``; a database outage gives the message back to the
broker (reject and requeue) without acknowledging it, and the row is left for the next
delivery or the reaper. A job's temporary folder is removed on every way out; the folders of
processes that were killed are swept at worker start and by the reaper.

Redelivery is safe: a job already final is skipped, and so is a job another live worker is
running (its heartbeat is fresh: the message was a duplicate); a job found running whose
worker died is claimed again, run from the start, and its artifacts, stored under fixed
keys, replace the partial ones — one set at the end. Every write of a run names its attempt,
so an older run still going elsewhere is refused and stops at its next progress call. A job
whose worker keeps dying (out of memory, say) is failed ``worker_lost`` after
``MAX_ATTEMPTS`` runs instead of cycling for ever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from quantcore import (
    JobInput,
    JobKind,
    QuantError,
    Stage,
    external_locations,
    release_freed_memory,
    run_job,
)
from service.errors import DatabaseUnavailableError
from service.liveness import me
from service.logging import job_context
from service.queue.celery_app import TASK_NAME
from service.settings import Settings, get_settings
from service.store.artifacts import external_key, store_artifacts
from service.store.db import Database
from service.store.heartbeats import HeartbeatsRepo
from service.store.jobs import ClaimedJob, JobsRepo
from service.store.storage import Storage, StorageError, make_storage
from workers import forks, soft_limit
from workers.heartbeat import Heartbeat
from workers.resilience import DependencyDown, Retrier, is_no_space, is_outage
from workers.restart import restart_after_hard_kill
from workers.temp import TMP_PREFIX, job_folder, remove_job_folders

log = logging.getLogger("quantserve.worker")

__all__ = ["TMP_PREFIX", "JobStopped", "Outcome", "ProgressWriter", "WorkerContext",
           "execute_job", "run_job_task"]

# Seconds between two progress writes of the same stage (a stage change is always written).
PROGRESS_INTERVAL_S = 0.5


class JobStopped(Exception):
    """The job row left ``running`` while the job ran (cancelled), or a newer attempt claimed
    it: stop the work."""


class GiveBack(Exception):
    """The database stayed unreachable: the message goes back to the broker, unacknowledged."""


class RecycleChild(SystemExit):
    """Raised by a pool process after a job ran out of memory, once the job is final:
    billiard reports the task and replaces the process (a fresh heap)."""


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # final already, running elsewhere, capped, or unknown id


@dataclass(frozen=True, kw_only=True)
class WorkerContext:
    """What a worker process needs to run jobs; one per process (never shared over fork)."""

    settings: Settings
    repo: JobsRepo
    beats: HeartbeatsRepo
    storage: Storage

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        db = Database.from_settings(settings, guard=soft_limit.held)
        return cls(settings=settings, repo=JobsRepo(db), beats=HeartbeatsRepo(db),
                   storage=make_storage(settings))


_contexts: dict[tuple[int, str], WorkerContext] = {}
_contexts_lock = threading.Lock()
os.register_at_fork(after_in_child=lambda: globals().update(_contexts_lock=threading.Lock()))


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
    longer running or no longer ``attempt``'s (or the heartbeat found so), which unwinds
    ``run_job`` at its next progress call, and ``SoftTimeLimitExceeded`` when the job's soft
    time limit passed but its exception was dropped (``workers.soft_limit``). A write the
    database does not answer is skipped: progress is not worth stopping the job for.
    """

    def __init__(
        self,
        repo: JobsRepo,
        job_id: str,
        *,
        attempt: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        stopped: threading.Event | None = None,
    ) -> None:
        self.repo = repo
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.clock = clock
        self.stopped = stopped
        self.stage: Stage | None = None
        self.last_write = float("-inf")
        self.writes = 0

    def _stop(self) -> JobStopped:
        return JobStopped(f"job {self.job_id} is no longer running attempt {self.attempt}")

    def __call__(self, stage: Stage, fraction: float) -> None:
        if self.stopped is not None and self.stopped.is_set():
            raise self._stop()
        soft_limit.raise_if_reached()
        now = self.clock()
        due = stage != self.stage or fraction >= 1.0 or now - self.last_write >= self.interval_s
        if not due:
            return
        self.stage, self.last_write = stage, now
        self.writes += 1
        try:
            running = self.repo.set_progress(self.job_id, Stage(stage).value, fraction,
                                             attempt=self.attempt)
        except DatabaseUnavailableError as exc:
            log.warning("job %s: progress not written, database unavailable: %s",
                        self.job_id, exc.reason)
            return
        if not running:
            raise self._stop()


def _fetch_inputs(job: ClaimedJob, ctx: WorkerContext, folder: Path, retry: Retrier) -> JobInput:
    model_path = folder / f"model{job.model_suffix}"
    # Linked where the storage is a local folder: the job only reads it (its external data
    # too: the core reads that file itself and onnxruntime takes it linked; only onnx's own
    # loader, which no job uses, refuses a hard-linked data file).
    retry.call("download the model",
               lambda: ctx.storage.download(job.model_key, model_path, link=True))
    data_key = external_key(job.model_key)
    # The upload's hash is the file's own, but for a model with external data (the pair's).
    known_sha256: str | None = job.model_sha256
    if job.model_suffix == ".onnx" and retry.call("look for external data",
                                                  lambda: ctx.storage.exists(data_key)):
        known_sha256 = None
        # Placed where the model's tensors say it is (one file, checked at upload); the
        # core then reads it tensor by tensor, memory-mapped.
        data_path = folder / external_locations(model_path)[0]
        if data_path.resolve().is_relative_to(folder.resolve()):  # else the core refuses it
            data_path.parent.mkdir(parents=True, exist_ok=True)
            retry.call("download the external data",
                       lambda: ctx.storage.download(data_key, data_path, link=True))
    dataset_path = None
    if job.dataset_key is not None:
        dataset_path, key = folder / "dataset.npz", job.dataset_key
        retry.call("download the dataset",
                   lambda: ctx.storage.download(key, dataset_path, link=True))
    return JobInput(
        kind=JobKind(job.kind), model_path=model_path, spec=job.spec, dataset_path=dataset_path,
        model_sha256=known_sha256,
    )


def _run_claimed(job: ClaimedJob, ctx: WorkerContext, retry: Retrier) -> Outcome:
    limits = ctx.settings.job_limits()
    attempt = job.attempts
    heartbeat = Heartbeat(ctx.beats, job.id, attempt=attempt,
                          interval_s=ctx.settings.heartbeat_interval_s)
    progress = ProgressWriter(ctx.repo, job.id, attempt=attempt, stopped=heartbeat.stopped)
    with heartbeat, job_folder(job.id) as folder:
        job_input = _fetch_inputs(job, ctx, folder, retry)
        out_dir = folder / "out"
        out_dir.mkdir()
        output = run_job(job_input, out_dir, progress=progress, limits=limits)
        if not retry.call("check the job", lambda: ctx.repo.is_running(job.id, attempt=attempt)):
            raise JobStopped(f"job {job.id} was cancelled or claimed again before attempt "
                             f"{attempt} stored its artifacts")
        records = retry.call("store the artifacts",
                             lambda: store_artifacts(ctx.storage, job.id, output.artifacts))
    if not retry.call("record the result", lambda: ctx.repo.succeed(
            job.id, output.report, records, attempt=attempt)):
        # Cancelled, or claimed by a newer attempt, meanwhile. The files stay: their keys are
        # the job's fixed keys, which a later attempt of the same job may have written too
        # (same inputs, same bytes).
        raise JobStopped(f"job {job.id} was cancelled or claimed again before attempt "
                         f"{attempt} stored its result")
    return Outcome.SUCCEEDED


def execute_job(job_id: str, ctx: WorkerContext) -> Outcome:
    """Run one job to a final state; safe to call again for the same id (see module doc).

    Raises ``GiveBack`` when the database stayed unreachable (the caller hands the message
    back) and ``MemoryError`` after recording a job that ran out of memory.
    """
    with job_context(job_id):
        try:
            return _execute(job_id, ctx)
        finally:
            release_freed_memory()  # an idle worker does not keep its last job's peak


def _claim(job_id: str, ctx: WorkerContext, retry: Retrier) -> ClaimedJob | None:
    owner, live_after = me(), ctx.settings.heartbeat_timeout_s
    try:
        return retry.call("claim the job", lambda: ctx.repo.claim(
            job_id, owner=owner, live_after_s=live_after))
    except DependencyDown as exc:
        raise GiveBack(str(exc)) from exc


def _fail(ctx: WorkerContext, retry: Retrier, job_id: str, attempt: int, code: str,
          message: str) -> None:
    try:
        retry.call("record the failure",
                   lambda: ctx.repo.fail(job_id, code, message, attempt=attempt))
    except DependencyDown as exc:
        raise GiveBack(str(exc)) from exc


def _caused_by(exc: BaseException, kinds: type | tuple[type, ...]) -> bool:
    """Whether ``exc`` or an exception it was raised from or while handling (10 links up) is
    one of ``kinds``."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _stopped(exc: BaseException) -> bool:
    """Whether ``exc`` comes of the process being stopped: a SystemExit (or an interrupt)
    raised inside an import or a C extension comes out as another error, with it as the
    cause; the job is not at fault and runs again after the restart."""
    return _caused_by(exc, (SystemExit, KeyboardInterrupt))


def _timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` comes of the soft time limit: Celery raises it wherever the job is,
    and code that turns any failure into its own error (a parser refusing bad bytes as an
    invalid model) may have caught it first."""
    return _caused_by(exc, SoftTimeLimitExceeded)


def _execute(job_id: str, ctx: WorkerContext) -> Outcome:
    extra: dict[str, Any] = {}
    retry = Retrier(ctx.settings.dependency_retry_s)
    soft_limit.start_job()
    job = _claim(job_id, ctx, retry)
    if job is None:
        log.info("job %s has nothing to run (final already, running elsewhere, or unknown)",
                 job_id, extra=extra)
        return Outcome.SKIPPED
    attempt = extra["attempt"] = job.attempts
    if attempt > 1:
        remove_job_folders(job_id)
    log.info("job %s started (attempt %d)", job_id, attempt, extra=extra)
    started = time.monotonic()

    def fail(code: str, message: str) -> Outcome:
        _fail(ctx, retry, job_id, attempt, code, message)
        return Outcome.FAILED

    def timed_out() -> Outcome:
        limit = ctx.settings.job_soft_time_limit_s
        log.warning("job %s timed out after %.1f s", job_id, limit, extra=extra)
        return fail("timeout", f"the job ran past its time limit of {limit:g} s "
                    "(QUANTSERVE_JOB_SOFT_TIME_LIMIT_S)")

    try:
        outcome = _run_claimed(job, ctx, retry)
    except JobStopped as exc:
        log.info("job %s stopped: %s", job_id, exc, extra=extra)
        return Outcome.CANCELLED
    except QuantError as exc:
        if _timed_out(exc):
            return timed_out()
        log.info("job %s failed: %s: %s", job_id, exc.code, exc.message, extra=extra)
        return fail(exc.code, exc.message)
    except DependencyDown as exc:
        if exc.database:
            raise GiveBack(str(exc)) from exc
        log.warning("job %s failed, storage unavailable: %s", job_id, exc, extra=extra)
        return fail("storage_unavailable", f"the storage did not answer for "
                    f"{ctx.settings.dependency_retry_s:g} s: {exc}")
    except StorageError as exc:
        log.warning("job %s failed on storage: %s", job_id, exc, extra=extra)
        if is_no_space(exc.__cause__ or exc):
            return fail("resource_limit", f"the storage is full: {exc}")
        return fail("storage_error", f"the job's files could not be moved: {exc}")
    except SoftTimeLimitExceeded:
        return timed_out()
    except MemoryError:
        log.warning("job %s ran out of memory", job_id, extra=extra)
        fail("resource_limit", "the job ran out of memory (QUANTSERVE_WORKER_MEMORY_LIMIT_MB "
             "and the machine's memory bound it)")
        raise
    except OSError as exc:
        if not is_no_space(exc):
            fail("internal_error", f"the worker failed unexpectedly: {type(exc).__name__}: "
                 f"{exc}")
            raise
        log.warning("job %s failed, no space left: %s", job_id, exc, extra=extra)
        return fail("resource_limit", f"no space left on the worker's disk: {exc}")
    except Exception as exc:
        if _stopped(exc):  # the process is being stopped: the job stays running, recovered
            raise
        if is_outage(exc):  # an outage outside the retried calls: hand the message back
            raise GiveBack(f"a dependency did not answer: {exc}") from exc
        if _timed_out(exc):
            return timed_out()
        fail("internal_error",
             f"the worker failed unexpectedly: {type(exc).__name__}: {exc}")
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
        if not isinstance(job_id, str) or isinstance(exc, (SystemExit, MemoryError)):
            return  # RecycleChild and MemoryError: the job is final already
        hard_kill = None  # the killed task's id, after a hard time limit
        if isinstance(exc, TimeLimitExceeded):
            hard_kill = task_id
            limit = get_settings().job_time_limit_s
            code = "timeout"
            message = (
                f"the job ran past its hard time limit of {limit:g} s and was killed "
                "(QUANTSERVE_JOB_TIME_LIMIT_S)"
            )
        else:
            code = "internal_error"
            message = f"the worker failed unexpectedly: {type(exc).__name__}: {exc}"
        # On a thread: billiard kills the pool process only once this hook returns, and the
        # write may wait on the database meanwhile.
        threading.Thread(target=_record_failure, args=(job_id, code, message, hard_kill),
                         name=f"fail-{job_id[:8]}", daemon=True).start()


def _record_failure(job_id: str, code: str, message: str, hard_kill: str | None) -> None:
    """Mark the job failed and remove its folders; after a hard kill (``hard_kill`` is the
    killed task's id), restart the worker (``workers.restart``)."""
    with forks.guard():
        try:
            worker_context(get_settings()).repo.fail(job_id, code, message)
        except DatabaseUnavailableError as exc:  # left running: the reaper will see it stale
            log.warning("job %s: failure not recorded: %s", job_id, exc.reason)
    time.sleep(1.0)  # the killed pool process is gone by now
    remove_job_folders(job_id)
    if hard_kill is not None:
        restart_after_hard_kill(hard_kill, get_settings().job_time_limit_s)


@shared_task(base=JobTask, name=TASK_NAME, bind=True)
def run_job_task(self: Task, job_id: str) -> str:
    """The Celery task: only the job id travels through the broker."""
    try:
        return execute_job(job_id, worker_context(get_settings())).value
    except GiveBack as exc:
        log.warning("job %s handed back to the broker: %s", job_id, exc)
        raise Reject(str(exc), requeue=True) from exc
    except MemoryError:
        if forks.IN_POOL_CHILD.is_set():
            raise RecycleChild(0) from None
        return Outcome.FAILED.value


# The worker's signal handlers, connected in this order: the reaper and the pool processes'
# limits, then each pool process's warm-up (run under those limits).
from workers import reaper, warmup  # noqa: E402, F401
