"""Opening a SQLite file that several processes share: its folder made, WAL mode switched on.

A SQLite URL may name a file in a folder that does not exist yet (the defaults' ``./var``, or
an operator's path): SQLite will not make it, and its "unable to open database file" names no
path, so ``make_folder`` creates it before the first connection.

On a new, empty file ``PRAGMA journal_mode=WAL`` is only recorded: the file is switched by the
connection's first write. A second connection asking for the switch while the first holds its
write lock in rollback mode is answered "database is locked" at once, without SQLite's busy
handler (waiting could deadlock), so a busy timeout does not help it. The switch is retried
here, in short random sleeps, until the file is in WAL mode (set by whichever process wrote
first) or ``timeout_s`` has passed.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


def make_folder(url: str) -> None:
    """Create the folder of the file a SQLite URL names (nothing for another database, an
    in-memory one or a file whose folder exists)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def set_wal(dbapi_conn: Any, timeout_s: float) -> None:
    """Put the file of ``dbapi_conn`` in WAL mode, retrying a refused switch for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    cursor = dbapi_conn.cursor()
    try:
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(random.uniform(0.005, 0.03))  # random: the openers do not retry in step
    finally:
        cursor.close()
