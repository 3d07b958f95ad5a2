"""Schema: the Alembic revisions build exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

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
