"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for one machine.

Two changes to kombu's transport, both for latency:

- an idle queue is polled every 0.1 s instead of every second (which alone would add up to a
  second to every job of the embedded mode). The transport hands every transport option to
  ``create_engine``, so the interval cannot be an option; it is a class attribute here;
- the SQLite file runs in WAL mode with ``synchronous=NORMAL``: a publish is one append to the
  log instead of several fsyncs of a rollback journal (about 20 ms each on this kind of disk),
  and the API's publishes do not block the workers' polls. A message committed before a power
  loss may be lost with NORMAL; the embedded mode is for one machine, the deployed shape uses
  Redis.

Selected by ``workers.celery_app`` for ``sqla+`` broker URLs.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy
from sqlalchemy import Engine, event


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Channel(sqlalchemy.Channel):
    def _engine_from_config(self) -> Engine:
        engine: Engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine


class Transport(sqlalchemy.Transport):
    Channel = Channel
    # Seconds between polls of an empty queue. Each poll is one short SQLite transaction,
    # so a few per second per worker cost nothing measurable.
    polling_interval = 0.1
