"""The switch of a new SQLite file to WAL mode, refused at once while another connection holds
the file's write lock, is retried until that lock is released or the timeout passes."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.sqlite_wal import set_wal


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """A connection holding the write lock of a new file not yet in WAL mode, and another
    connection to the file (a 5 s busy timeout): eight processes opening a new file at once,
    each switching it to WAL and creating its tables, had one switch in 25 refused
    ("database is locked") at such a moment."""
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE t (x)")
    other = sqlite3.connect(path, timeout=5, isolation_level=None)
    yield writer, other
    if writer.in_transaction:
        writer.rollback()
    other.close()
    writer.close()


def test_the_plain_switch_is_refused_at_once_despite_a_busy_timeout(
    locked: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    _, other = locked
    began = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")
    assert time.monotonic() - began < 1.0  # SQLite did not wait its 5 s


def test_the_switch_waits_for_the_first_writer_and_finds_wal(
    locked: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    writer, other = locked
    committer = threading.Timer(0.3, writer.commit)
    committer.start()
    began = time.monotonic()
    set_wal(other, timeout_s=5)
    assert time.monotonic() - began >= 0.25
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    committer.join()


def test_the_switch_gives_up_after_its_timeout(
    locked: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    _, other = locked
    began = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        set_wal(other, timeout_s=0.4)
    assert 0.4 <= time.monotonic() - began < 2.0


def test_an_engine_connection_waits_for_the_lock_and_checks_foreign_keys(tmp_path: Path) -> None:
    """``make_engine``'s SQLite connections: WAL mode, the busy timeout (the driver's
    ``timeout``) and foreign keys enforced."""
    from sqlalchemy import text

    from service.store.db import SQLITE_BUSY_TIMEOUT_S, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.execute(text(f"PRAGMA {name}")).scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_S * 1000
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()
