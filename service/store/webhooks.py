"""Webhook deliveries: each finished job that named a ``callback_url`` is POSTed there once,
signed with its team's secret, and retried with backoff until it is answered 2xx or runs out
of attempts.

The delivery rows are written by the dispatcher itself (``enrol_finished``) for jobs found
final with a callback and no row yet, so neither the worker nor a cancel needs to know about
webhooks; it looks only at jobs finished since a time it moves forward (by the finish-time
index), not at the whole table. Every dispatcher (one per API process) claims a due row with
one conditional ``UPDATE`` that moves its next attempt past a lease: two processes cannot
send the same attempt, and a dispatcher that dies mid-send leaves the row to be retried once
the lease ends.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError

from service.store.db import Database
from service.store.jobs import FINAL
from service.store.models import Job, Team, WebhookDelivery, new_id, utcnow
from service.store.records import JobRecord

SECRET_PREFIX = "whsec_"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class DeliveryRecord:
    job_id: str
    delivery_id: str
    url: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class DueDelivery:
    """A delivery claimed for one attempt: what to send, where, and with which secret."""

    job: JobRecord
    delivery_id: str
    url: str
    attempt: int  # 1 for the first
    secret: str


def _record(row: WebhookDelivery) -> DeliveryRecord:
    return DeliveryRecord(job_id=row.job_id, delivery_id=row.delivery_id, url=row.url,
                          state=row.state, attempts=row.attempts,
                          next_attempt_at=row.next_attempt_at, last_status=row.last_status,
                          last_error=row.last_error, delivered_at=row.delivered_at)


class WebhooksRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- the team's secret --------------------------------------------------------------

    def secret(self, team_id: str) -> str:
        """The team's signing secret, made on first use."""
        with self.db.session() as session:
            current = session.scalar(select(Team.webhook_secret).where(Team.id == team_id))
            if current:
                return current
            session.execute(update(Team).where(Team.id == team_id,
                                               Team.webhook_secret.is_(None))
                            .values(webhook_secret=SECRET_PREFIX + secrets.token_urlsafe(32)))
            session.commit()
            made = session.scalar(select(Team.webhook_secret).where(Team.id == team_id))
        if not made:
            raise LookupError(f"no team {team_id!r}")
        return made

    def rotate_secret(self, team_id: str) -> str:
        """A new secret for the team; deliveries from now on are signed with it."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as session:
            session.execute(update(Team).where(Team.id == team_id)
                            .values(webhook_secret=secret))
            session.commit()
        return secret

    # --- deliveries -----------------------------------------------------------------------

    def delivery(self, job_id: str) -> DeliveryRecord | None:
        with self.db.session() as session:
            row = session.get(WebhookDelivery, job_id)
        return None if row is None else _record(row)

    def enrol_finished(self, *, since: datetime, limit: int = 200) -> int:
        """Write a pending delivery for each job that finished at ``since`` or later with a
        callback and no delivery yet; returns how many were found (``limit`` at most)."""
        query = (
            select(Job.id, Job.team_id, Job.callback_url)
            .where(Job.finished_at >= since, Job.callback_url.is_not(None),
                   Job.status.in_([s.value for s in FINAL]),
                   ~exists().where(WebhookDelivery.job_id == Job.id))
            .order_by(Job.finished_at).limit(limit)
        )
        with self.db.session() as session:
            found = session.execute(query).all()
        for job_id, team_id, url in found:
            with self.db.session() as session:
                session.add(WebhookDelivery(job_id=job_id, delivery_id=new_id(), team_id=team_id,
                                            url=url, state=DeliveryState.PENDING.value,
                                            attempts=0, next_attempt_at=utcnow()))
                try:
                    session.commit()
                except IntegrityError:  # another dispatcher enrolled it (or the job went)
                    session.rollback()
        return len(found)

    def claim_due(self, *, lease_s: float, limit: int = 16) -> list[DueDelivery]:
        """Claim up to ``limit`` pending deliveries whose next attempt is due."""
        now = utcnow()
        with self.db.session() as session:
            candidates = session.execute(
                select(WebhookDelivery.job_id, WebhookDelivery.attempts)
                .where(WebhookDelivery.state == DeliveryState.PENDING.value,
                       WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at).limit(limit)
            ).all()
        claimed = []
        for job_id, attempts in candidates:
            with self.db.session() as session:
                moved = session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.job_id == job_id,
                           WebhookDelivery.state == DeliveryState.PENDING.value,
                           WebhookDelivery.attempts == attempts)
                    .values(attempts=attempts + 1,
                            next_attempt_at=now + timedelta(seconds=lease_s))
                    .execution_options(synchronize_session=False)
                )
                session.commit()
                if moved.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                row = session.execute(
                    select(WebhookDelivery, Job).join(Job, Job.id == WebhookDelivery.job_id)
                    .where(WebhookDelivery.job_id == job_id)
                ).one_or_none()
            if row is None:  # the job was deleted meanwhile
                continue
            delivery, job = row
            claimed.append(DueDelivery(job=JobRecord.of(job), delivery_id=delivery.delivery_id,
                                       url=delivery.url, attempt=attempts + 1,
                                       secret=self.secret(job.team_id)))
        return claimed

    def _finish(self, job_id: str, attempt: int, **values: object) -> bool:
        with self.db.session() as session:
            moved = session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.job_id == job_id, WebhookDelivery.attempts == attempt,
                       WebhookDelivery.state == DeliveryState.PENDING.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]

    def delivered(self, job_id: str, attempt: int, status: int) -> bool:
        return self._finish(job_id, attempt, state=DeliveryState.DELIVERED.value,
                            last_status=status, last_error=None, delivered_at=utcnow())

    def retry_later(self, job_id: str, attempt: int, *, status: int | None, error: str,
                    delay_s: float) -> bool:
        return self._finish(job_id, attempt, last_status=status, last_error=error[:1000],
                            next_attempt_at=utcnow() + timedelta(seconds=delay_s))

    def give_up(self, job_id: str, attempt: int, *, status: int | None, error: str) -> bool:
        return self._finish(job_id, attempt, state=DeliveryState.FAILED.value,
                            last_status=status, last_error=error[:1000])
