"""Deleting jobs, models and datasets (``DELETE`` routes and the retention sweep).

The rows go in one transaction; the storage keys they held are returned for the caller to
delete afterwards (a file left behind by a failed delete is harmless, a row pointing at a
deleted file is not). Uploads are stored once per content (``blobs/<sha256><suffix>``) and
may be shared by other teams' rows: a blob key is returned only when no row refers to it
any more.

- A job is deleted only once it is final: a queued or running job is refused with 409
  ``job_not_finished`` (cancel it first), so no worker is left writing a deleted job's files.
- A model or dataset is deleted only when no job refers to it: 409 ``resource_in_use``,
  naming those jobs; delete them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.errors import ConflictError, NotFoundError
from service.store.db import Database
from service.store.jobs import FINAL
from service.store.models import Artifact, Dataset, Job, Model, WebhookDelivery

MAX_NAMED_JOBS = 20  # job ids named in a resource_in_use answer


@dataclass(frozen=True, kw_only=True)
class Expired:
    """Something the retention sweep removes: ``what`` is job, model or dataset."""

    what: str
    id: str
    team_id: str


def _blob_shared(session: Session, key: str) -> bool:
    return bool(session.scalar(select(
        or_(exists().where(Model.storage_key == key), exists().where(Dataset.storage_key == key))
    )))


class RemovalRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def delete_job(self, job_id: str, *, team_id: str) -> list[str]:
        """Delete a final job with its artifact rows; returns the artifacts' storage keys."""
        final = [s.value for s in FINAL]
        with self.db.session() as session:
            status = session.scalar(select(Job.status)
                                    .where(Job.id == job_id, Job.team_id == team_id))
            if status is None:
                raise NotFoundError(f"job {job_id!r} not found", details={"job_id": job_id})
            if status not in final:
                raise ConflictError(
                    f"job {job_id!r} is {status}; cancel it before deleting it",
                    code="job_not_finished", details={"status": status},
                )
            keys = list(session.scalars(select(Artifact.storage_key)
                                        .where(Artifact.job_id == job_id)))
            session.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
            session.execute(delete(Artifact).where(Artifact.job_id == job_id))
            session.execute(delete(Job).where(Job.id == job_id, Job.status.in_(final)))
            session.commit()
        return keys

    def delete_model(self, model_id: str, *, team_id: str) -> str | None:
        """Delete the team's model; returns its blob key when no other row shares it."""
        return self._delete_upload(Model, Job.model_id, "model", model_id, team_id)

    def delete_dataset(self, dataset_id: str, *, team_id: str) -> str | None:
        """Delete the team's dataset; returns its blob key when no other row shares it."""
        return self._delete_upload(Dataset, Job.dataset_id, "dataset", dataset_id, team_id)

    def _delete_upload(self, table: type[Model] | type[Dataset], column: Any, what: str,
                       upload_id: str, team_id: str) -> str | None:
        with self.db.session() as session:
            key = session.scalar(select(table.storage_key)
                                 .where(table.id == upload_id, table.team_id == team_id))
            if key is None:
                raise NotFoundError(f"{what} {upload_id!r} not found",
                                    details={f"{what}_id": upload_id})
            users = list(session.scalars(select(Job.id).where(column == upload_id)
                                         .order_by(Job.created_at.desc())
                                         .limit(MAX_NAMED_JOBS)))
            if users:
                raise ConflictError(
                    f"{what} {upload_id!r} is used by {len(users)}"
                    f"{'+' if len(users) == MAX_NAMED_JOBS else ''} job(s); delete them first",
                    code="resource_in_use", details={"job_ids": users},
                )
            try:
                session.execute(delete(table).where(table.id == upload_id))
                session.commit()
            except IntegrityError:  # a job referring to it was submitted meanwhile
                session.rollback()
                raise ConflictError(f"{what} {upload_id!r} is used by a job; delete it first",
                                    code="resource_in_use", details={"job_ids": []}) from None
            return None if _blob_shared(session, key) else key

    # --- retention --------------------------------------------------------------------------

    def expired(self, before: datetime, *, limit: int = 200) -> list[Expired]:
        """Final jobs that finished before ``before``, then uploads made before it that no
        job refers to (those of the jobs listed first become free on the next sweep)."""
        with self.db.session() as session:
            jobs = session.execute(
                select(Job.id, Job.team_id)
                .where(Job.status.in_([s.value for s in FINAL]), Job.finished_at < before)
                .limit(limit)
            ).all()
            found = [Expired(what="job", id=i, team_id=t) for i, t in jobs]
            for what, table, column in (("model", Model, Job.model_id),
                                        ("dataset", Dataset, Job.dataset_id)):
                rows = session.execute(
                    select(table.id, table.team_id)
                    .where(table.created_at < before, ~exists().where(column == table.id))
                    .limit(limit)
                ).all()
                found += [Expired(what=what, id=i, team_id=t) for i, t in rows]
        return found
