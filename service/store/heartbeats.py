"""Heartbeats of running jobs, the reaper's view of them, and named leases.

A worker writes a heartbeat on the job it runs every few seconds (``beat``). The reaper
(``workers.reaper``) looks at the running jobs (``running``), and takes back those whose
heartbeat went stale or whose process is known dead: ``requeue_stale`` (running → queued, so
that a republished message runs it again) or ``fail_lost`` (``worker_lost`` after the last
allowed run). Both are conditional on the heartbeat the reaper saw, so a job that showed a
sign of life meanwhile is left alone, and two reapers cannot both take one job back.

``take_lease`` lets one process at a time across workers do a periodic duty (the reaper's
pass): the holder renews it, another process takes it once it expired or its holder is
known dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from service.liveness import dead
from service.store.db import Database
from service.store.jobs import JobStatus
from service.store.models import Job, Lease, utcnow


@dataclass(frozen=True, kw_only=True)
class RunningJob:
    id: str
    attempts: int
    task_id: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_owner: str | None


@dataclass(frozen=True, kw_only=True)
class QueuedJob:
    id: str
    task_id: str | None
    created_at: datetime


class HeartbeatsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def beat(self, job_id: str, *, attempt: int, owner: str) -> bool:
        """The run ``attempt`` of the job is alive; False when it is no longer running as that
        run (cancelled, finished, or taken back): the run should stop."""
        with self.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value,
                       Job.attempts == attempt)
                .values(heartbeat_at=utcnow(), heartbeat_owner=owner)
            )
            session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def running(self, limit: int = 1000) -> list[RunningJob]:
        """The running jobs, oldest heartbeat first."""
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.attempts, Job.task_id, Job.started_at, Job.heartbeat_at,
                       Job.heartbeat_owner)
                .where(Job.status == JobStatus.RUNNING.value)
                .order_by(Job.heartbeat_at)
                .limit(limit)
            ).all()
        return [RunningJob(id=r.id, attempts=r.attempts, task_id=r.task_id,
                           started_at=r.started_at, heartbeat_at=r.heartbeat_at,
                           heartbeat_owner=r.heartbeat_owner) for r in rows]

    def queued_before(self, cutoff: datetime, limit: int = 1000) -> list[QueuedJob]:
        """The queued jobs submitted before ``cutoff``, oldest first."""
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.task_id, Job.created_at)
                .where(Job.status == JobStatus.QUEUED.value, Job.created_at < cutoff)
                .order_by(Job.created_at)
                .limit(limit)
            ).all()
        return [QueuedJob(id=r.id, task_id=r.task_id, created_at=r.created_at) for r in rows]

    def _unchanged(self, job: RunningJob) -> tuple[object, ...]:
        beat = (Job.heartbeat_at.is_(None) if job.heartbeat_at is None
                else Job.heartbeat_at == job.heartbeat_at)
        return (Job.id == job.id, Job.status == JobStatus.RUNNING.value,
                Job.attempts == job.attempts, beat)

    def requeue_stale(self, job: RunningJob) -> bool:
        """running → queued, if the job is still the run the reaper saw, with the same
        heartbeat."""
        with self.db.session() as session:
            result = session.execute(
                update(Job).where(*self._unchanged(job))  # type: ignore[arg-type]
                .values(status=JobStatus.QUEUED.value, stage=None, progress=0.0,
                        heartbeat_at=None, heartbeat_owner=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def fail_lost(self, job: RunningJob, message: str) -> bool:
        """running → failed ``worker_lost``, if the job is still the run the reaper saw."""
        now = utcnow()
        duration = (None if job.started_at is None
                    else max(0.0, (now - job.started_at).total_seconds()))
        with self.db.session() as session:
            result = session.execute(
                update(Job).where(*self._unchanged(job))  # type: ignore[arg-type]
                .values(status=JobStatus.FAILED.value, finished_at=now, duration_s=duration,
                        error_code="worker_lost", error_message=message[:4000])
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def take_lease(self, name: str, *, owner: str, ttl_s: float) -> bool:
        """Hold the lease ``name`` for ``ttl_s`` more seconds; True if ``owner`` holds it now.

        Taken when it is free, expired, already ``owner``'s, or held by a process known to be
        dead (``service.liveness``).
        """
        now = utcnow()
        until = now + timedelta(seconds=ttl_s)
        with self.db.session() as session:
            holder = session.execute(
                select(Lease.owner, Lease.expires_at).where(Lease.name == name)
            ).one_or_none()
            if holder is None:
                session.add(Lease(name=name, owner=owner, expires_at=until))
                try:
                    session.commit()
                except IntegrityError:  # another process created it first
                    session.rollback()
                    return False
                return True
            free = (holder.owner == owner or holder.expires_at is None
                    or holder.expires_at <= now or dead(holder.owner))
            if not free:
                return False
            result = session.execute(
                update(Lease)
                .where(Lease.name == name,
                       Lease.owner.is_(None) if holder.owner is None
                       else Lease.owner == holder.owner,
                       Lease.expires_at.is_(None) if holder.expires_at is None
                       else Lease.expires_at == holder.expires_at)
                .values(owner=owner, expires_at=until)
            )
            session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def release_lease(self, name: str, *, owner: str) -> None:
        with self.db.session() as session:
            session.execute(update(Lease).where(Lease.name == name, Lease.owner == owner)
                            .values(owner=None, expires_at=None))
            session.commit()
