"""Alembic environment: migrations run on the connection ``Database.migrate`` hands in, or,
from a shell, on ``-x url=...`` (``alembic -c service/store/migrations/alembic.ini``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic -c service/store/migrations/alembic.ini -x url=... upgrade head`
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database with: alembic -x url=postgresql+psycopg://... ")
    with create_engine(url).begin() as conn:
        _run(conn)
