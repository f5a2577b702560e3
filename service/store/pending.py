"""Presigned uploads waiting to be completed: one row each, scoped to its team.

A row is made when a caller asks for an upload URL and read when it completes the upload;
``complete`` records the model (or dataset, by the row's ``kind``) it became, so completing
again answers the same one, and
``refuse`` marks a file that failed. Rows whose ``complete_by`` has passed (and refused
ones) are unknown to callers (404); the retention sweep purges them at ``complete_by`` with
the objects under their keys (``service.api.presigned.purge_pending``): a URL still valid
after a completion or a refusal may have been used again.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select, update

from service.store.db import Database
from service.store.models import PendingUpload, utcnow
from service.store.records import PendingUploadRecord


class PendingUploadsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self,
        *,
        upload_id: str,
        team_id: str,
        filename: str,
        size_bytes: int,
        sha256: str,
        storage_key: str,
        ttl_s: float,
        kind: str = "model",
    ) -> PendingUploadRecord:
        """A new pending upload whose URL lasts ``ttl_s``; it may be completed for as long
        again after that (a PUT begun just before the URL's expiry may take a while)."""
        now = utcnow()
        row = PendingUpload(
            id=upload_id,
            team_id=team_id,
            filename=filename,
            size_bytes=size_bytes,
            sha256=sha256,
            storage_key=storage_key,
            kind=kind,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            complete_by=now + timedelta(seconds=2 * ttl_s),
        )
        with self.db.session() as session:
            session.add(row)
            session.commit()
            return PendingUploadRecord.of(row)

    def get(
        self, upload_id: str, *, team_id: str, kind: str = "model"
    ) -> PendingUploadRecord | None:
        """The team's pending upload of ``kind``, while it may still be completed."""
        with self.db.session() as session:
            row = session.scalar(
                select(PendingUpload).where(
                    PendingUpload.id == upload_id,
                    PendingUpload.team_id == team_id,
                    PendingUpload.kind == kind,
                    PendingUpload.complete_by > utcnow(),
                    PendingUpload.refused.is_(False),
                )
            )
            return None if row is None else PendingUploadRecord.of(row)

    def complete(self, row: PendingUploadRecord, result_id: str) -> None:
        """Record the model or dataset (by the row's kind) the upload became."""
        column = "model_id" if row.kind == "model" else "dataset_id"
        with self.db.session() as session:
            session.execute(
                update(PendingUpload).where(PendingUpload.id == row.id).values(
                    {column: result_id})
            )
            session.commit()

    def refuse(self, upload_id: str) -> None:
        """The upload failed: callers no longer find it; the purge still removes its file."""
        with self.db.session() as session:
            session.execute(
                update(PendingUpload).where(PendingUpload.id == upload_id).values(refused=True)
            )
            session.commit()

    def remove(self, upload_id: str) -> None:
        with self.db.session() as session:
            session.execute(delete(PendingUpload).where(PendingUpload.id == upload_id))
            session.commit()

    def overdue(self, *, limit: int) -> list[PendingUploadRecord]:
        """Uploads whose time to complete has passed (completed or not), oldest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(PendingUpload)
                .where(PendingUpload.complete_by <= utcnow())
                .order_by(PendingUpload.complete_by)
                .limit(limit)
            )
            return [PendingUploadRecord.of(row) for row in rows]
