"""Database engine, sessions and migrations.

One ``Database`` per process, built from ``Settings.database_url``. SQLite (the embedded
default) is opened in WAL mode with a busy timeout so that the API and the worker processes
can write the same file; PostgreSQL (deployed) gets a pre-pinged connection pool.

On SQLite, ``Database.write_lock`` lets the threads of one process write one at a time (the
file takes one writer at a time anyway): a thread waiting for it is woken as soon as it is
free, where SQLite's own busy handler would sleep in growing steps of up to 100 ms. It is a
no-op on other databases. The submission path takes it around its insert.

Every session and connection handed out turns the driver's ``OperationalError`` (the database
is down, unreachable or locked past its timeout) into the service's
``DatabaseUnavailableError``, so that no caller above the store needs to know SQLAlchemy.
Each is also opened inside ``Database.guard``, a context its owner may set: a worker holds
back its job's time limit there (``workers.soft_limit``), so that no call is left half-done.

``Database.migrate()`` runs the Alembic migrations to the newest revision; the API, the worker
and the CLI call it at start-up. On PostgreSQL an advisory lock keeps replicas that start
together from migrating twice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import DatabaseUnavailableError
from service.settings import Settings
from service.sqlite_wal import make_folder, set_wal

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATION_LOCK_ID = 0x7175616E74  # any constant shared by all replicas
# Seconds a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The busy timeout is the driver's ``timeout`` (``make_engine``), set as it connects.
    set_wal(dbapi_conn, SQLITE_BUSY_TIMEOUT_S)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextmanager
def _answering() -> Iterator[None]:
    """The driver's "cannot answer" as the service's ``DatabaseUnavailableError``."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailableError(str(exc.orig)) from exc
    except (SQLAlchemyTimeoutError, DisconnectionError) as exc:
        raise DatabaseUnavailableError(str(exc)) from exc


def make_engine(
    url: str, *, connect_timeout_s: float | None = None, statement_timeout_s: float | None = None
) -> Engine:
    """An engine for ``url``; creates the folder of a SQLite file if it is missing.

    On PostgreSQL, ``connect_timeout_s`` bounds a new connection and the wait for a free one
    of the pool, TCP keepalives notice a peer that went away, and ``statement_timeout_s`` (0:
    none) bounds each statement on the server.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        make_folder(url)
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                   "timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                        "keepalives_count": 3}
        if connect_timeout_s is not None:
            # libpq takes whole seconds, and treats 1 as 2.
            connect_args["connect_timeout"] = max(2, math.ceil(connect_timeout_s))
            options["pool_timeout"] = connect_timeout_s
        if statement_timeout_s:
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args=connect_args, **options)


class Database:
    """The engine and a session factory; sessions do not expire objects on commit."""

    def __init__(
        self, url: str, *, connect_timeout_s: float | None = None,
        statement_timeout_s: float | None = None,
        guard: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.url = url
        self.guard = guard
        self.engine = make_engine(url, connect_timeout_s=connect_timeout_s,
                                  statement_timeout_s=statement_timeout_s)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.write_lock: AbstractContextManager[object] = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        )

    @classmethod
    def from_settings(
        cls, settings: Settings,
        guard: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> Database:
        """The database of ``settings``, with its time limits."""
        return cls(settings.database_url, connect_timeout_s=settings.db_connect_timeout_s,
                   statement_timeout_s=settings.db_statement_timeout_s, guard=guard)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that is closed on exit; callers commit explicitly."""
        with self.guard(), _answering(), self.sessionmaker() as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection that is closed on exit; callers commit explicitly."""
        with self.guard(), _answering(), self.engine.connect() as connection:
            yield connection

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                                   {"id": _MIGRATION_LOCK_ID})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def ping(self) -> None:
        """Raise if the database cannot answer a trivial query (the driver's own error, whose
        text says why: the readiness probe shows it)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
