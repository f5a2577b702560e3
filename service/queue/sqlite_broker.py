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

Selected by ``service.queue.celery_app`` for ``sqla+`` broker URLs.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from kombu.transport import sqlalchemy
from kombu.utils.json import dumps
from sqlalchemy import Engine, Insert, event, insert

_registry_lock = threading.Lock()
_write_locks: dict[str, threading.Lock] = {}  # broker URL → its writers' lock in this process
_queue_ids: dict[tuple[str, str], int] = {}  # (broker URL, queue name) → kombu_queue.id


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def write_lock(url: str) -> threading.Lock:
    """The lock this process's publishers to the broker file at ``url`` take in turn."""
    with _registry_lock:
        return _write_locks.setdefault(url, threading.Lock())


class Channel(sqlalchemy.Channel):
    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

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
