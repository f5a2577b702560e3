"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled faster.

kombu's virtual transports poll an idle queue once a second, which alone would add up to a
second to every job of the embedded mode. The SQLAlchemy transport hands every transport
option to ``create_engine``, so the interval cannot be passed as an option; it is a class
attribute of this subclass instead. Selected by ``workers.celery_app`` for ``sqla+`` URLs.
"""

from __future__ import annotations

from kombu.transport import sqlalchemy


class Transport(sqlalchemy.Transport):
    # Seconds between polls of an empty queue. Each poll is one short SQLite write
    # transaction, so a few per second per worker costs nothing measurable.
    polling_interval = 0.1
