"""Pytest plugin: PostgreSQL databases for tests (skipped, with the reason, when unreachable).

Fixtures:
    postgres_admin  session scope; skips when 127.0.0.1:5432 does not answer.
    postgres_url    function scope; a fresh ``entitle_test_<hex>`` database, dropped after.

Other test packages can use it by listing ``"tests.database_fixtures"`` in the
conftest of the folder that needs them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

__all__ = ["PG_ADMIN", "fresh_database", "postgres_admin", "postgres_url"]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth; CREATE/DROP run here


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create ``entitle_test_<hex>``, yield its SQLAlchemy URL, drop it (even if in use)."""
    name = f"entitle_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_admin() -> None:
    """Skip (visibly) when the test PostgreSQL is not there."""
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=2, autocommit=True).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}".strip())


@pytest.fixture
def postgres_url(postgres_admin: None) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    with fresh_database() as url:
        yield url
