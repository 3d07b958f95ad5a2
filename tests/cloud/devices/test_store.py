"""Schema: the Alembic revisions build exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from cloud import database
from cloud.database import MIGRATIONS_DIR, Base, Store, downgrade, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a new SQLite file or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _script_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def test_migrations_match_models_and_rerun(fresh_url: str) -> None:
    store = Store.open(fresh_url)
    try:
        upgrade(store.engine)  # a second upgrade is a no-op
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory.from_config(_script_config()).get_current_head()
            assert context.get_current_revision() == head
        tables = set(inspect(store.engine).get_table_names())
        assert {"installations", "devices", "service_grants", "issued_tokens", "api_keys"} <= tables
        downgrade(store.engine, "0001")
        assert "api_keys" not in inspect(store.engine).get_table_names()
        downgrade(store.engine, "base")
        assert "devices" not in inspect(store.engine).get_table_names()
        upgrade(store.engine)
        store.ping()
    finally:
        store.close()


def test_a_read_only_transaction_reads_beside_a_writer_and_refuses_writes(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Store.reading()`` does not queue behind a writer (SQLite: a deferred BEGIN reads
    the WAL snapshot; ``BEGIN IMMEDIATE`` would wait out the busy timeout and fail), sees
    only committed rows, refuses a write, and leaves its pooled connection writable."""
    monkeypatch.setattr(database, "_SQLITE_BUSY_MS", 0)  # a read that queues fails at once
    store = Store.open(fresh_url)
    try:
        with store.transaction() as tx:
            tx.execute(text("CREATE TABLE t (n INTEGER)"))
            tx.execute(text("INSERT INTO t VALUES (1)"))
        with store.engine.connect() as writer:
            writer.execute(text("INSERT INTO t VALUES (2)"))  # holds the write lock, uncommitted
            with store.reading() as tx:
                assert tx.execute(text("SELECT n FROM t")).scalars().all() == [1]
            with pytest.raises(DBAPIError), store.reading() as tx:
                tx.execute(text("INSERT INTO t VALUES (3)"))
            writer.commit()
        with store.transaction() as tx:  # the same pooled connection writes again
            tx.execute(text("INSERT INTO t VALUES (4)"))
        with store.reading() as tx:
            assert sorted(tx.execute(text("SELECT n FROM t")).scalars()) == [1, 2, 4]
    finally:
        store.close()
