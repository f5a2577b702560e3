"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for one machine.

Three changes to kombu's transport, all for latency:

- an idle queue is polled every 0.1 s instead of every second (which alone would add up to a
  second to every job of the embedded mode). The transport hands every transport option to
  ``create_engine``, so the interval cannot be an option; it is a class attribute here;
- the SQLite file runs in WAL mode with ``synchronous=NORMAL``: a publish is one append to the
  log instead of several fsyncs of a rollback journal (about 20 ms each on this kind of disk),
  and the API's publishes do not block the workers' polls. A message committed before a power
  loss may be lost with NORMAL; the embedded mode is for one machine, the deployed shape uses
  Redis;
- a publish is one ``INSERT`` and its commit: the queue's row id is looked up once per process
  (kombu never deletes a queue row) instead of by a query per message, and the message row is
  written without the ORM's unit of work. The threads of one process publish one at a time
  (a lock per broker file): SQLite takes one writer at a time anyway, and a writer waiting in
  SQLite's busy handler sleeps in growing steps (up to 100 ms) instead of being woken when the
  file is free, which gave the API's submissions latency spikes of hundreds of milliseconds
  under bursts.

Redelivery (kombu's transport has none: a message taken by a worker stays invisible for ever
if that worker dies, and an acknowledged one is never deleted): every message a consumer takes
is leased to its process (``service.liveness``) in ``quantserve_lease``, in the transaction
that takes it. An acknowledged message is deleted with its lease; a rejected or restored one
(requeue, warm shutdown) is made visible again in place. Every consumer, every
``RESTORE_INTERVAL_S`` while it polls, makes visible again the messages leased to processes
that died (SIGKILL, lost machine power): a replacement worker takes over what a killed one
held, ahead of newer messages. The file lives on one machine, so a process's death is known
exactly, with no timeout to wait out.

Selected by ``service.queue.celery_app`` for ``sqla+`` broker URLs.
"""

from __future__ import annotations

import threading
import time
from functools import cached_property
from queue import Empty
from typing import Any

from kombu.transport import sqlalchemy
from kombu.transport.sqlalchemy.models import metadata as kombu_metadata
from kombu.utils.json import dumps, loads
from sqlalchemy import Engine, Insert, event, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.liveness import dead, me
from service.sqlite_wal import make_folder, set_wal

# Seconds between two looks of a polling consumer for messages leased to dead processes.
RESTORE_INTERVAL_S = 1.0
# Seconds SQLite waits for another process's write lock before "database is locked": its own
# default (5 s) ran out for processes opening a new file at once on a loaded 2-core machine.
BUSY_TIMEOUT_S = 15
_LEASE_DDL = (
    "CREATE TABLE IF NOT EXISTS quantserve_lease (message_id INTEGER PRIMARY KEY, "
    "owner VARCHAR(200) NOT NULL, delivery_tag VARCHAR(64))",
    "CREATE INDEX IF NOT EXISTS ix_quantserve_lease_tag ON quantserve_lease (delivery_tag)",
    "CREATE INDEX IF NOT EXISTS ix_quantserve_lease_owner ON quantserve_lease (owner)",
)

_registry_lock = threading.Lock()
_write_locks: dict[str, threading.Lock] = {}  # broker URL → its writers' lock in this process
_queue_ids: dict[tuple[str, str], int] = {}  # (broker URL, queue name) → kombu_queue.id


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    set_wal(dbapi_conn, BUSY_TIMEOUT_S)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def write_lock(url: str) -> threading.Lock:
    """The lock this process's publishers to the broker file at ``url`` take in turn."""
    with _registry_lock:
        return _write_locks.setdefault(url, threading.Lock())


class Channel(sqlalchemy.Channel):
    _last_restore = 0.0

    def _engine_from_config(self) -> Engine:
        """The engine (SQLite waiting up to ``BUSY_TIMEOUT_S`` for a lock, unless the caller
        said otherwise), with kombu's tables and the lease table created in one write
        transaction: kombu's own ``create_all`` (after this) looks for each table, then
        creates it, so an API and a worker opening a new file at once could both try, and
        the second's first publish failed with "table kombu_queue already exists"."""
        client = self.connection.client
        if str(client.hostname).startswith("sqlite"):  # any caller's, not only the app's
            client.transport_options.setdefault("connect_args", {}).setdefault(
                "timeout", BUSY_TIMEOUT_S
            )
            # A new broker file's folder (the defaults' ./var is made by the database, which
            # an operator may have put elsewhere): without it the worker could never connect.
            make_folder(str(client.hostname))
        engine: Engine = super()._engine_from_config()
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
        with engine.connect() as conn:
            if sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # the other processes wait
            kombu_metadata.create_all(conn)
            for ddl in _LEASE_DDL:
                conn.execute(text(ddl))
            conn.commit()
        return engine

    @cached_property
    def _table(self) -> str:
        return str(self.message_cls.__table__.name)

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """The oldest visible message, taken and leased to this process in one
        transaction."""
        engine, _ = self._open()
        now = time.monotonic()
        if now - self._last_restore >= RESTORE_INTERVAL_S:
            self._last_restore = now
            self.restore_dead()
        queue_id = self._queue_id(queue)
        table = self._table
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            row = conn.execute(
                text(f"SELECT id, payload FROM {table} WHERE queue_id = :q AND visible = 1 "
                     "ORDER BY timestamp, id LIMIT 1"), {"q": queue_id},
            ).first()
            if row is None:
                conn.rollback()
                raise Empty()
            payload = loads(row.payload)
            tag = (payload.get("properties") or {}).get("delivery_tag")
            conn.execute(text(f"UPDATE {table} SET visible = 0, "
                              "timestamp = CURRENT_TIMESTAMP WHERE id = :id"), {"id": row.id})
            conn.execute(text("INSERT OR REPLACE INTO quantserve_lease (message_id, owner, "
                              "delivery_tag) VALUES (:id, :owner, :tag)"),
                         {"id": row.id, "owner": me(), "tag": tag})
            conn.commit()
        return payload

    def messages_held(self, queue: str) -> int:
        """The messages of ``queue`` waiting or taken and not yet acknowledged (an
        acknowledged message is deleted)."""
        engine, _ = self._open()
        queue_id = self._queue_id(queue)
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM {self._table} WHERE "
                                         "queue_id = :q"), {"q": queue_id}).scalar_one())

    def restore_dead(self) -> int:
        """Make the messages leased to dead processes visible again, ahead of the others;
        returns how many."""
        engine, _ = self._open()
        with engine.connect() as conn:
            owners = conn.execute(text("SELECT DISTINCT owner FROM quantserve_lease")).scalars()
            gone = [owner for owner in owners if dead(owner)]
            conn.rollback()
            restored = 0
            for owner in gone:
                restored += self._release(conn, "owner = :key", owner)
        return restored

    def _release(self, conn: Any, where: str, key: str) -> int:
        """Make the leased messages matching ``where`` visible again, first in line."""
        with write_lock(self.connection.client.hostname):
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            result = conn.execute(
                text(f"UPDATE {self._table} SET visible = 1, timestamp = NULL WHERE id IN "
                     f"(SELECT message_id FROM quantserve_lease WHERE {where})"), {"key": key})
            conn.execute(text(f"DELETE FROM quantserve_lease WHERE {where}"), {"key": key})
            conn.commit()
        return int(result.rowcount or 0)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """Acknowledge, and delete the message with its lease."""
        super().basic_ack(delivery_tag, multiple)
        engine, _ = self._open()
        with write_lock(self.connection.client.hostname), engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.execute(text(f"DELETE FROM {self._table} WHERE id IN (SELECT message_id FROM "
                              "quantserve_lease WHERE delivery_tag = :tag)"),
                         {"tag": delivery_tag})
            conn.execute(text("DELETE FROM quantserve_lease WHERE delivery_tag = :tag"),
                         {"tag": delivery_tag})
            conn.commit()

    def _restore(self, message: Any) -> None:
        """A rejected or unacknowledged message, visible again in place (kombu would
        publish a copy and keep the old row)."""
        engine, _ = self._open()
        with engine.connect() as conn:
            if self._release(conn, "delivery_tag = :key", str(message.delivery_tag)):
                return
        super()._restore(message)

    def _get_or_create(self, queue: str) -> Any:
        """The queue's row. kombu's looks it up, then inserts it: two processes declaring a
        queue on a new file at once both inserted, and the second's publish failed on the
        name's UNIQUE constraint. Here a missing row is inserted by ``INSERT OR IGNORE``."""
        engine, _ = self._open()
        if engine.dialect.name != "sqlite":
            return super()._get_or_create(queue)
        rows = self.session.query(self.queue_cls).filter(self.queue_cls.name == queue)
        found = rows.first()
        if found is not None:
            return found
        table = self.queue_cls.__table__
        with write_lock(self.connection.client.hostname), engine.begin() as conn:
            conn.execute(sqlite_insert(table).values(name=queue).on_conflict_do_nothing())
        self.session.rollback()  # a fresh read: the row may be another process's
        return rows.one()

    def _queue_id(self, queue: str) -> int:
        key = (self.connection.client.hostname, queue)
        queue_id = _queue_ids.get(key)
        if queue_id is None:
            queue_id = int(self._get_or_create(queue).id)
            self.session.commit()  # ends the lookup's transaction
            _queue_ids[key] = queue_id
        return queue_id

    # kombu's own classes name the second parameter differently (payload, message).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """The message row, as kombu writes it (visible, version 1, no timestamp)."""
        engine, _ = self._open()
        url = self.connection.client.hostname
        row = {"payload": dumps(payload), "queue_id": self._queue_id(queue)}
        with write_lock(url), engine.begin() as conn:
            conn.execute(self._insert_message, row)

    @cached_property
    def _insert_message(self) -> Insert:
        return insert(self.message_cls.__table__)


class Transport(sqlalchemy.Transport):
    Channel = Channel
    # Seconds between polls of an empty queue. Each poll is one short SQLite transaction,
    # so a few per second per worker cost nothing measurable.
    polling_interval = 0.1
