"""The job table: its state machine, what the worker calls to move a job along it, and the
API's reads of jobs and their artifacts.

Every status change is one conditional ``UPDATE ... WHERE status IN (allowed sources)``, so two
processes racing on one job (two workers after a redelivery, a cancel during a run) cannot
both win, on SQLite as on PostgreSQL. The allowed sources are derived from ``TRANSITIONS``.

A worker's writes also name the attempt it is running (``ClaimedJob.attempts``, counted up by
each claim): once a redelivered job has been claimed again, the older run's progress and
result are refused, so only the newest run can move the job on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from quantcore import FORMAT_SUFFIX
from service.errors import InvalidTransitionError, NotFoundError
from service.liveness import dead
from service.store.db import Database
from service.store.models import Artifact, Dataset, Job, Model, utcnow
from service.store.records import ArtifactRecord, JobRecord

MAX_ATTEMPTS = 3  # runs of one job whose worker died before it gives up


class JobStatus(StrEnum):
    """A job's status. The allowed transitions (``TRANSITIONS``) are:

    - queued → running      a worker claimed it
    - queued → cancelled    cancelled before any worker took it
    - running → succeeded   the worker stored the report and artifacts
    - running → failed      the core raised, the time limit passed, its workers kept dying
    - running → cancelled   cancelled while running; the worker stops at its next progress call
    - running → queued      redelivery: the worker died, the broker hands the task to another
    - queued → failed       the job could not be started at all

    succeeded, failed and cancelled are final.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
FINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


def sources(target: JobStatus) -> tuple[JobStatus, ...]:
    """The statuses from which ``target`` may be reached."""
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


@dataclass(frozen=True, kw_only=True)
class ClaimedJob:
    """What a worker needs to run a job it has claimed (a snapshot, not a live row)."""

    id: str
    team_id: str
    kind: str
    spec: dict[str, Any]
    model_id: str
    model_key: str
    model_suffix: str  # ".onnx", ".safetensors" or ".npz": the core reads the format from it
    model_sha256: str  # the upload's: the file's own, or with external data the pair's
    dataset_id: str | None
    dataset_key: str | None
    attempts: int  # 1 on the first run, more after redeliveries
    task_id: str | None


@dataclass(frozen=True, kw_only=True)
class JobPage:
    """One page of a team's jobs, newest first."""

    jobs: list[JobRecord]
    count: int  # jobs matching the filters, over all pages
    more: bool  # whether a page follows this one


def _of_attempt(attempt: int | None) -> tuple[Any, ...]:
    """The WHERE clause keeping a write to run ``attempt`` (none for ``None``: any run)."""
    return () if attempt is None else (Job.attempts == attempt,)


def alive(heartbeat_at: datetime | None, owner: str | None, now: datetime,
          live_after_s: float) -> bool:
    """Whether a run with this heartbeat still counts as alive: a heartbeat younger than
    ``live_after_s`` from a process not known to be dead (``service.liveness``)."""
    if heartbeat_at is None or dead(owner):
        return False
    return (now - heartbeat_at).total_seconds() < live_after_s


def _duration(started_at: datetime | None, finished_at: datetime) -> float | None:
    return None if started_at is None else max(0.0, (finished_at - started_at).total_seconds())


class JobsRepo:
    """Status changes of jobs; each method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _move(
        self, session: Session, job_id: str, target: JobStatus, *, attempt: int | None = None,
        **values: Any,
    ) -> bool:
        """One conditional status change; with ``attempt``, only if that run is the newest."""
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_([s.value for s in sources(target)]),
                   *_of_attempt(attempt))
            .values(status=target.value, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # --- reads (the API's) ------------------------------------------------------------------

    def get(self, job_id: str, *, team_id: str) -> JobRecord | None:
        """The team's job ``job_id``; ``None`` for an unknown id or another team's job."""
        with self.db.session() as session:
            job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == team_id))
        return None if job is None else JobRecord.of(job)

    def page(
        self, *, team_id: str, status: str | None = None, model_id: str | None = None,
        limit: int, after: tuple[datetime, str] | None = None, kind: str | None = None,
        labels: Sequence[tuple[str, str | None]] = (), text: str | None = None,
    ) -> JobPage:
        """Up to ``limit`` of the team's jobs, newest first (by creation time, then id),
        filtered by ``status``, ``model_id``, ``kind``, ``labels`` (each ``(key, value)``
        must match; a ``None`` value asks only for the key) and ``text`` (a substring of the
        name, any case, or the start of the id); ``after`` is the (created_at, id) of the
        last job of the previous page."""
        filters = [Job.team_id == team_id]
        if status is not None:
            filters.append(Job.status == status)
        if model_id is not None:
            filters.append(Job.model_id == model_id)
        if kind is not None:
            filters.append(Job.kind == kind)
        for key, value in labels:
            label = Job.labels[key].as_string()
            filters.append(label.is_not(None) if value is None else label == value)
        if text:
            filters.append(or_(func.lower(Job.name).contains(text.lower(), autoescape=True),
                               Job.id.startswith(text.lower(), autoescape=True)))
        query = select(Job).where(*filters)
        if after is not None:
            at, last_id = after
            query = query.where(or_(Job.created_at < at,
                                    and_(Job.created_at == at, Job.id < last_id)))
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
        with self.db.session() as session:
            rows = list(session.scalars(query))
            count = session.scalar(select(func.count()).select_from(Job).where(*filters)) or 0
        return JobPage(jobs=[JobRecord.of(j) for j in rows[:limit]], count=count,
                       more=len(rows) > limit)

    def artifacts(self, job_id: str) -> list[ArtifactRecord]:
        """The job's artifacts, by name."""
        with self.db.session() as session:
            rows = session.scalars(
                select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)
            )
            return [ArtifactRecord.of(a) for a in rows]

    def artifact(self, job_id: str, name: str) -> ArtifactRecord | None:
        with self.db.session() as session:
            row = session.scalar(
                select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
            )
        return None if row is None else ArtifactRecord.of(row)

    # --- status changes (the worker's, and cancel) -------------------------------------------

    def status(self, job_id: str) -> JobStatus | None:
        with self.db.session() as session:
            value = session.scalar(select(Job.status).where(Job.id == job_id))
        return None if value is None else JobStatus(value)

    def claim(
        self, job_id: str, *, max_attempts: int = MAX_ATTEMPTS, owner: str | None = None,
        live_after_s: float | None = None,
    ) -> ClaimedJob | None:
        """queued → running, and return the job; ``None`` if there is nothing to run.

        ``owner`` names the claiming process (``service.liveness``); the claim writes it with
        a first heartbeat. A job found ``running`` is a redelivery. With ``live_after_s``,
        a run that still shows signs of life (a heartbeat younger than that, from a process
        not known dead) is left alone and ``None`` returned: the message was a duplicate.
        Otherwise its worker died mid-job: the job moves running → queued → running and is
        returned again, with ``attempts`` counted up, so the new worker runs it from the
        start. After ``max_attempts`` runs that all died, the job fails with ``worker_lost``
        instead (a job that kills its worker every time must not loop forever). A final job
        (or an unknown id) gives ``None``: the task has nothing to do.
        """
        with self.db.session() as session:
            now = utcnow()

            def start() -> bool:  # queued → running as a new attempt
                return self._move(session, job_id, JobStatus.RUNNING, started_at=now,
                                  stage=None, progress=0.0, attempts=Job.attempts + 1,
                                  heartbeat_at=now, heartbeat_owner=owner)

            claimed = start()
            if not claimed:
                running = session.execute(
                    select(Job.attempts, Job.started_at, Job.heartbeat_at, Job.heartbeat_owner)
                    .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                ).one_or_none()
                if running is not None and live_after_s is not None and alive(
                    running.heartbeat_at, running.heartbeat_owner, now, live_after_s
                ):
                    session.rollback()
                    return None
                if running is not None and running.attempts >= max_attempts:
                    self._move(session, job_id, JobStatus.FAILED, finished_at=now,
                               duration_s=_duration(running.started_at, now),
                               error_code="worker_lost",
                               error_message=f"the worker running this job died "
                               f"{running.attempts} times; it is not run again")
                    session.commit()
                    return None
                if running is not None and self._move(session, job_id, JobStatus.QUEUED,
                                                      attempt=running.attempts):
                    claimed = start()
            if not claimed:
                session.rollback()
                return None
            # Read inside the claiming transaction: a racing claim cannot change the attempt
            # number this run is told before it commits.
            row = session.execute(
                select(Job, Model.storage_key, Model.format, Model.sha256, Dataset.storage_key)
                .join(Model, Model.id == Job.model_id)
                .outerjoin(Dataset, Dataset.id == Job.dataset_id)
                .where(Job.id == job_id)
            ).one()
            session.commit()
        job, model_key, model_format, model_sha256, dataset_key = row
        return ClaimedJob(
            id=job.id, team_id=job.team_id, kind=job.kind, spec=dict(job.spec),
            model_id=job.model_id, model_key=model_key,
            model_suffix=FORMAT_SUFFIX.get(model_format, f".{model_format}"),
            model_sha256=model_sha256,
            dataset_id=job.dataset_id, dataset_key=dataset_key, attempts=job.attempts,
            task_id=job.task_id,
        )

    def requeue(self, job_id: str) -> bool:
        """running → queued (a worker gives a job back); False if it was not running."""
        with self.db.session() as session:
            moved = self._move(session, job_id, JobStatus.QUEUED, stage=None, progress=0.0,
                               heartbeat_at=None, heartbeat_owner=None)
            session.commit()
        return moved

    def set_progress(self, job_id: str, stage: str, progress: float, *, attempt: int) -> bool:
        """Write stage and progress (clamped to [0, 1]) of a running job's run ``attempt``.

        Returns False when the job is no longer running (cancelled, or finished by another
        worker) or a newer attempt has claimed it: the caller should stop.
        """
        progress = min(1.0, max(0.0, float(progress)))
        with self.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value,
                       Job.attempts == attempt)
                .values(stage=stage, progress=progress, heartbeat_at=utcnow())
            )
            session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def is_cancelled(self, job_id: str) -> bool:
        return self.status(job_id) is JobStatus.CANCELLED

    def is_running(self, job_id: str, *, attempt: int) -> bool:
        """Whether the job is still running as run ``attempt`` (not cancelled, not taken over
        by a newer attempt): a worker checks before storing a result."""
        with self.db.session() as session:
            found = session.scalar(
                select(Job.id).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value,
                                     Job.attempts == attempt)
            )
        return found is not None

    def succeed(
        self, job_id: str, report: dict[str, Any], artifacts: Sequence[ArtifactRecord], *,
        attempt: int,
    ) -> bool:
        """running → succeeded with the report and exactly this set of artifacts.

        Artifacts recorded by an earlier, interrupted attempt are replaced, so a job that was
        run twice still lists one set. Returns False (and changes nothing) if the job was not
        running any more (cancelled meanwhile) or ``attempt`` is not its newest run.
        """
        with self.db.session() as session:
            started = session.scalar(select(Job.started_at).where(Job.id == job_id))
            now = utcnow()
            summary = report.get("summary") if isinstance(report, dict) else None
            if not self._move(session, job_id, JobStatus.SUCCEEDED, attempt=attempt,
                              finished_at=now, progress=1.0, report=report, summary=summary,
                              duration_s=_duration(started, now),
                              error_code=None, error_message=None):
                session.rollback()
                return False
            session.execute(delete(Artifact).where(Artifact.job_id == job_id))
            session.add_all(
                Artifact(job_id=job_id, name=a.name, size_bytes=a.size_bytes, sha256=a.sha256,
                         media_type=a.media_type, storage_key=a.storage_key)
                for a in artifacts
            )
            session.commit()
        return True

    def fail(self, job_id: str, code: str, message: str, *, attempt: int | None = None) -> bool:
        """queued|running → failed with an error code and a message a person can act on.

        With ``attempt``, only while that run is the newest (a stale run's failure is
        refused); ``None`` fails the job whichever run holds it (a job that could not start,
        or a pool process killed at its hard time limit).
        """
        with self.db.session() as session:
            started = session.scalar(select(Job.started_at).where(Job.id == job_id))
            now = utcnow()
            moved = self._move(session, job_id, JobStatus.FAILED, attempt=attempt,
                               finished_at=now, duration_s=_duration(started, now),
                               error_code=code, error_message=message[:4000])
            session.commit()
        return moved

    def cancel(self, job_id: str) -> str | None:
        """queued|running → cancelled; returns the task id to revoke (may be None).

        Raises ``NotFoundError`` for an unknown id and ``InvalidTransitionError`` (409) for a
        job that has already finished.
        """
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            task_id = job.task_id
            now = utcnow()
            if not self._move(session, job_id, JobStatus.CANCELLED, finished_at=now,
                              duration_s=_duration(job.started_at, now)):
                session.rollback()
                current = session.scalar(select(Job.status).where(Job.id == job_id))
                raise InvalidTransitionError(
                    f"job {job_id!r} is {current}; only queued or running jobs can be cancelled",
                    details={"status": current},
                )
            session.commit()
        return task_id
