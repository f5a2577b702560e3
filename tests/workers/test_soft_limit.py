"""The soft time limit's signal, sent to this process for real: raised at once in the job's
code, held back until a database call has ended, and raised again at the next progress
report when a finalizer dropped it."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from billiard.pool import soft_timeout_sighandler
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import text

from quantcore import Stage
from service.store.db import Database
from service.store.jobs import JobsRepo
from workers import soft_limit
from workers.tasks import ProgressWriter


def spin() -> None:
    """Bytecode that runs long enough for a pending signal's handler to run in it."""
    for _ in range(10_000):
        pass


@pytest.fixture
def limit_signal() -> Iterator[None]:
    """A pool process's state: billiard's handler installed, then taken over for a job."""
    before = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    try:
        soft_limit.start_job()
        assert signal.getsignal(signal.SIGUSR1) is not soft_timeout_sighandler
        yield
    finally:
        signal.signal(signal.SIGUSR1, before)
        soft_limit.start_job()


def send_limit() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    spin()


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/jobs.db", guard=soft_limit.held)
    with db.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.commit()
    return db


def test_the_limit_is_raised_where_the_job_is_and_again_if_caught(limit_signal: None) -> None:
    soft_limit.raise_if_reached()  # not yet
    with pytest.raises(SoftTimeLimitExceeded):
        send_limit()
    with pytest.raises(SoftTimeLimitExceeded):  # code that caught it went on
        soft_limit.raise_if_reached()


def test_the_limit_waits_for_a_database_call_to_end(
    limit_signal: None, database: Database, tmp_path: Path
) -> None:
    with pytest.raises(SoftTimeLimitExceeded), database.session() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        send_limit()  # mid-transaction: held back
        session.execute(text("INSERT INTO t VALUES (2)"))
        session.commit()
    # The transaction ended whole, and the file's write lock is free at once.
    other = sqlite3.connect(tmp_path / "jobs.db", timeout=0)
    assert [r[0] for r in other.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
    other.execute("INSERT INTO t VALUES (3)")
    other.commit()
    other.close()


class SendsTheLimitWhenCollected:
    def __del__(self) -> None:
        send_limit()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_limit_dropped_by_a_finalizer_is_raised_at_the_next_progress_report(
    limit_signal: None, database: Database
) -> None:
    doomed = SendsTheLimitWhenCollected()
    del doomed  # the handler's exception lands in __del__: Python prints it and goes on
    spin()
    report = ProgressWriter(JobsRepo(database), "no-such-job", attempt=1)
    with pytest.raises(SoftTimeLimitExceeded):
        report(Stage.QUANTIZING, 0.5)


def test_another_handler_of_the_signal_is_left_alone() -> None:
    """A solo pool's worker, where SIGUSR1 is Celery's traceback dump: not a time limit."""

    def dump(_signum: int, _frame: object) -> None:
        pass

    before = signal.signal(signal.SIGUSR1, dump)
    try:
        soft_limit.start_job()
        assert signal.getsignal(signal.SIGUSR1) is dump
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_new_job_forgets_the_last_ones_limit(limit_signal: None) -> None:
    with pytest.raises(SoftTimeLimitExceeded):
        send_limit()
    soft_limit.start_job()
    soft_limit.raise_if_reached()
