"""Engines and migrations: SQLite file or PostgreSQL (``postgresql+psycopg://``).

SQLite runs in WAL mode with foreign keys on and every transaction started
``BEGIN IMMEDIATE``, so two writers queue on the busy timeout instead of
failing on a lock upgrade. PostgreSQL migrations take an advisory lock, so
several workers starting at once upgrade the schema once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

__all__ = ["MIGRATIONS_DIR", "downgrade", "make_engine", "upgrade"]

_log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_LOCK = 0x656E7469746C65  # "entitle": one advisory lock id for schema upgrades
_SQLITE_BUSY_MS = 10_000


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` set up for our access pattern."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **kwargs)
        _sqlite_setup(engine)
        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The connection is handed over directly: no URL (and no password) in the config.
    config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine, revision: str, *, down: bool) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
        step = command.downgrade if down else command.upgrade
        step(_alembic_config(connection), revision)
    _log.info("database schema at %s (%s)", revision, engine.url.render_as_string())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic), in one transaction where supported."""
    _migrate(engine, revision, down=False)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema down to ``revision`` (``"base"`` drops every table)."""
    _migrate(engine, revision, down=True)
