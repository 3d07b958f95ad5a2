"""Alembic environment: runs on the connection handed over by cloud.database.

``alembic -x url=postgresql+psycopg://... revision --autogenerate`` works too
(script_location = cloud/migrations) for writing new revisions.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cloud.database import make_engine
from cloud.schema import metadata

target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass the database with: alembic -x url=<sqlalchemy url> ...")
    engine = make_engine(url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run online")
run_migrations_online()
