"""Writing new jobs: the reads a submission checks first and the insert of its rows.

The reads and the insert of one submission share one database connection (a ``Submission``)
and go through SQLAlchemy Core: a submission is the API's hottest write, and the ORM's unit of
work is not needed for it. Statements are built once, at import: building a statement and its
cache key costs more than running it on SQLite.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from service.store.db import Database
from service.store.jobs import JobStatus
from service.store.models import Dataset, Job, Model, new_id, utcnow
from service.store.records import JobRecord


def _lookups(entity: type[Model] | type[Dataset]) -> tuple[Select[Any], Select[Any]]:
    """The team's rows of ``entity`` among some ids: by one id, and by a list of them."""
    owned = entity.team_id == bindparam("team")
    return (select(entity.id).where(entity.id == bindparam("id"), owned),
            select(entity.id).where(entity.id.in_(bindparam("ids", expanding=True)), owned))


_MODELS = _lookups(Model)
_DATASETS = _lookups(Dataset)
_BY_KEY = select(Job.__table__).where(Job.team_id == bindparam("team"),
                                      Job.idempotency_key == bindparam("key"))
_BY_KEYS = select(Job.__table__).where(
    Job.team_id == bindparam("team"), Job.idempotency_key.in_(bindparam("keys", expanding=True))
)
_INSERT = insert(Job)
# The columns a new job is written with; the others keep their database default (NULL).
_INSERTED = ("id", "team_id", "kind", "status", "stage", "progress", "attempts", "model_id",
             "dataset_id", "spec", "idempotency_key", "task_id", "created_at", "name", "labels",
             "callback_url")


def new_job(
    *, team_id: str, kind: str, model_id: str, dataset_id: str | None, spec: dict[str, Any],
    idempotency_key: str | None, task_id: str | None, name: str | None = None,
    labels: dict[str, str] | None = None, callback_url: str | None = None,
) -> JobRecord:
    """A job about to be inserted: a fresh id, queued, created now."""
    return JobRecord(id=new_id(), team_id=team_id, kind=kind, status=JobStatus.QUEUED.value,
                     model_id=model_id, dataset_id=dataset_id, spec=spec,
                     idempotency_key=idempotency_key, task_id=task_id, created_at=utcnow(),
                     name=name, labels=labels, callback_url=callback_url)


def _row(job: JobRecord) -> dict[str, Any]:
    return {column: getattr(job, column) for column in _INSERTED}


class Submission:
    """The reads and writes of one submission by one team, on one connection."""

    def __init__(self, db: Database, conn: Connection, team_id: str) -> None:
        self.db = db
        self.conn = conn
        self.team_id = team_id

    def _owned(self, lookups: tuple[Select[Any], Select[Any]], ids: Collection[str]) -> set[str]:
        if not ids:
            return set()
        one, many = lookups
        if len(ids) == 1:
            return set(self.conn.scalars(one, {"id": next(iter(ids)), "team": self.team_id}))
        return set(self.conn.scalars(many, {"ids": list(ids), "team": self.team_id}))

    def owned_models(self, ids: Collection[str]) -> set[str]:
        """Those of ``ids`` that are models of the team."""
        return self._owned(_MODELS, ids)

    def owned_datasets(self, ids: Collection[str]) -> set[str]:
        """Those of ``ids`` that are datasets of the team."""
        return self._owned(_DATASETS, ids)

    def existing(self, keys: Collection[str]) -> dict[str, JobRecord]:
        """The team's jobs submitted before with one of ``keys``, by key."""
        if not keys:
            return {}
        if len(keys) == 1:
            result = self.conn.execute(_BY_KEY, {"team": self.team_id, "key": next(iter(keys))})
        else:
            result = self.conn.execute(_BY_KEYS, {"team": self.team_id, "keys": list(keys)})
        return {row["idempotency_key"]: JobRecord.of(row) for row in result.mappings()}

    def insert(self, jobs: Sequence[JobRecord]) -> dict[str, JobRecord]:
        """Commit the rows of ``jobs``; returns, by the id of a job not written, the job of a
        concurrent submission that took its Idempotency-Key first.

        One transaction for all of them; if a key was taken meanwhile, each row is written in
        a transaction of its own, so that the others are still accepted.
        """
        conn = self.conn
        try:
            with self.db.write_lock:
                conn.execute(_INSERT, [_row(job) for job in jobs])
                conn.commit()
            return {}
        except IntegrityError:
            conn.rollback()
        taken: dict[str, JobRecord] = {}
        for job in jobs:
            try:
                with self.db.write_lock:
                    conn.execute(_INSERT, _row(job))
                    conn.commit()
            except IntegrityError:  # the same key submitted concurrently: theirs won
                conn.rollback()
                key = job.idempotency_key
                found = self.existing([key]).get(key) if key else None
                conn.rollback()
                if found is None:
                    raise
                taken[job.id] = found
        return taken


class SubmissionsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def submission(self, team_id: str) -> Iterator[Submission]:
        """One connection for the reads and the insert of one submission."""
        with self.db.connect() as conn:
            yield Submission(self.db, conn, team_id)

    def withdraw(self, job_ids: Collection[str]) -> None:
        """Delete job rows that were written but never published."""
        if job_ids:
            with self.db.write_lock, self.db.connect() as conn:
                conn.execute(delete(Job).where(Job.id.in_(list(job_ids))))
                conn.commit()
