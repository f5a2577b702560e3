"""Figures of the job table for the metrics: jobs by status and run times of finished jobs.

Read in one transaction at scrape time with two aggregate queries, so they count the work of
every worker and are the same whichever API replica is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select

from service.store.db import Database
from service.store.models import Job


@dataclass(frozen=True, kw_only=True)
class DurationStats:
    """Run times of the finished jobs of one status."""

    status: str
    count: int
    total_s: float
    at_most: tuple[int, ...]  # jobs that ran at most each bound's seconds (cumulative)


@dataclass(frozen=True, kw_only=True)
class JobStats:
    by_status: dict[str, int]  # statuses without jobs are absent
    durations: list[DurationStats]


class StatsRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def jobs(self, bounds: Sequence[float]) -> JobStats:
        """Jobs by status, and per status the run times counted against ``bounds`` (s)."""
        at_most = [func.sum(case((Job.duration_s <= b, 1), else_=0)) for b in bounds]
        with self.db.session() as session:
            by_status: dict[str, int] = {
                status: count
                for status, count in session.execute(
                    select(Job.status, func.count()).group_by(Job.status)
                )
            }
            rows = session.execute(
                select(Job.status, func.count(), func.coalesce(func.sum(Job.duration_s), 0.0),
                       *at_most)
                .where(Job.duration_s.is_not(None))
                .group_by(Job.status)
            ).all()
        durations = [
            DurationStats(status=status, count=int(count), total_s=float(total),
                          at_most=tuple(int(n or 0) for n in counts))
            for status, count, total, *counts in rows
        ]
        return JobStats(by_status=by_status, durations=durations)
