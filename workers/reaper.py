"""The reaper, and the worker's process hooks.

Every worker's main process runs a reaper thread (started when the worker is ready, stopped
at shutdown). A pass, every ``reaper_interval_s``:

- sweeps the temporary folders of job processes that died on this machine;
- takes the ``reaper`` lease (``HeartbeatsRepo.take_lease``): one pass at a time across all
  workers, the embedded and the deployed shape alike; a holder that died is replaced at once
  on its machine and after the lease's time elsewhere;
- looks at the running jobs: one whose heartbeat is older than ``heartbeat_timeout_s``, or
  whose process is known dead (``service.liveness``), lost its worker. A heartbeat's age
  counts from when this reaper last regained the database at the earliest: after an outage
  no live job looks lost because its heartbeats could not be written. It is failed
  ``worker_lost`` if it has had its ``MAX_ATTEMPTS`` runs; otherwise its task is published
  again and the row moved back to queued (if its heartbeat did not move meanwhile), so a
  live worker runs it. The publish comes first: a publish that fails leaves the row for the
  next pass, and a publish whose requeue then loses a race is only a duplicate message,
  which the claim drops;
- publishes again the queued jobs that have no message: when the broker holds no job
  message at all (none waiting, none taken and unacknowledged) while jobs submitted more
  than ``UNSENT_AFTER_S`` ago are still queued, their messages were lost (an API process
  that died between the job's insert and its publish, a Redis that restarted without its
  data or evicted it). Waiting for an empty broker makes it exact, one message lost in a
  microsecond window aside (a copy the claim drops); under unbroken load such a job waits
  for the queue's first idle moment.

Pool processes get the memory limit (``worker_memory_limit_mb``, as RLIMIT_AS) when they
start, and the allocator settings of ``quantcore.allocator`` from the worker before its pool.
"""

from __future__ import annotations

import logging
import resource
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from celery import signals

from quantcore import keep_freed_memory
from service.errors import BrokerUnavailableError, DatabaseUnavailableError
from service.liveness import me
from service.queue.enqueue import enqueue_job, messages_held
from service.settings import Settings, get_settings
from service.store.db import Database
from service.store.heartbeats import HeartbeatsRepo, RunningJob
from service.store.jobs import MAX_ATTEMPTS, alive
from service.store.models import utcnow
from workers import forks
from workers.temp import sweep_orphaned_folders

log = logging.getLogger("quantserve.reaper")

LEASE = "reaper"
# A queued job this old with no message in the broker lost it: its publish followed its
# insert by at most the broker timeout.
UNSENT_AFTER_S = 60.0


@dataclass
class PassReport:
    held_lease: bool = False
    requeued: list[str] = field(default_factory=list)
    republished: list[str] = field(default_factory=list)  # queued, their message lost
    failed: list[str] = field(default_factory=list)
    folders_removed: int = 0


class Reaper:
    """Takes back the jobs of dead workers; ``run_once`` is one pass."""

    def __init__(self, settings: Settings, *, owner: str | None = None,
                 max_attempts: int = MAX_ATTEMPTS, unsent_after_s: float = UNSENT_AFTER_S) -> None:
        self.settings = settings
        self.unsent_after_s = unsent_after_s
        self.beats = HeartbeatsRepo(Database.from_settings(settings))
        self.owner = owner or me()
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Since when this reaper has reached the database without a break (None: not now).
        self.up_since: datetime | None = None

    @property
    def lease_ttl_s(self) -> float:
        return 3 * self.settings.reaper_interval_s

    def _lost(self, job: RunningJob) -> None:
        if job.attempts >= self.max_attempts:
            if self.beats.fail_lost(job, f"the worker running this job died {job.attempts} "
                                    "times; it is not run again"):
                log.warning("job %s failed: worker_lost after %d runs", job.id, job.attempts)
                self.report.failed.append(job.id)
            return
        try:
            enqueue_job(job.id, self.settings, task_id=job.task_id)
        except BrokerUnavailableError as exc:
            log.warning("job %s not republished, broker unavailable: %s", job.id, exc.message)
            return
        if self.beats.requeue_stale(job):
            log.warning("job %s taken back from a lost worker (%s, last heartbeat %s): "
                        "queued again", job.id, job.heartbeat_owner, job.heartbeat_at)
            self.report.requeued.append(job.id)

    def run_once(self) -> PassReport:
        self.report = PassReport()
        self.report.folders_removed = sweep_orphaned_folders()
        with forks.guard():
            if not self.beats.take_lease(LEASE, owner=self.owner, ttl_s=self.lease_ttl_s):
                return self.report
            self.report.held_lease = True
            running = self.beats.running()
        now = utcnow()
        if self.up_since is None:
            self.up_since = now
        for job in running:
            # Heartbeats could not be written while the database was out of this reaper's
            # reach: age them from when it came back, not from their last write.
            beat = job.heartbeat_at if job.heartbeat_at is None else max(job.heartbeat_at,
                                                                         self.up_since)
            if alive(beat or self.up_since, job.heartbeat_owner, now,
                     self.settings.heartbeat_timeout_s):
                continue
            with forks.guard():
                self._lost(job)
        with forks.guard():
            self._republish_unsent(now)
        return self.report

    def _republish_unsent(self, now: datetime) -> None:
        queued = self.beats.queued_before(now - timedelta(seconds=self.unsent_after_s))
        if not queued:
            return
        try:
            if messages_held(self.settings):
                return  # the broker still has job messages: these jobs may be behind them
            for job in queued:
                enqueue_job(job.id, self.settings, task_id=job.task_id)
                log.warning("job %s queued since %s had no message in the broker: published "
                            "again", job.id, job.created_at)
                self.report.republished.append(job.id)
        except BrokerUnavailableError as exc:
            log.warning("queued jobs not checked against the broker, unavailable: %s",
                        exc.message)

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except DatabaseUnavailableError as exc:
                self.up_since = None
                log.warning("reaper pass skipped, database unavailable: %s", exc.reason)
            except Exception:  # the reaper must outlive any one bad pass
                log.exception("reaper pass failed")
            if self._stop.wait(self.settings.reaper_interval_s):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with forks.guard():
                self.beats.release_lease(LEASE, owner=self.owner)
        except DatabaseUnavailableError:
            pass


_reaper: Reaper | None = None


@signals.worker_ready.connect
def _start_reaper(**_: Any) -> None:
    global _reaper
    removed = sweep_orphaned_folders()
    if removed:
        log.info("removed %d temporary folders of killed jobs", removed)
    _reaper = Reaper(get_settings())
    _reaper.start()


@signals.worker_shutdown.connect
def _stop_reaper(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()


@signals.worker_init.connect
def _tune_allocator(**_: Any) -> None:
    # Before the pool starts: prefork's children inherit it (see quantcore.allocator).
    keep_freed_memory()


@signals.worker_process_init.connect
def _limit_pool_process(**_: Any) -> None:
    forks.IN_POOL_CHILD.set()
    limit_mb = get_settings().worker_memory_limit_mb
    if limit_mb > 0:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        limit = limit_mb << 20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
