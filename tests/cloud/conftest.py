"""Fixtures: a fake clock, the port simulators, SQLite and PostgreSQL databases, the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from cloud import create_app
from cloud.testing import AccountsSimulator, PublisherSimulator
from entitle.config import Settings
from tests.cloud.harness import DAY, Cloud, FakeClock, running
from tests.database_fixtures import fresh_database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def publisher() -> PublisherSimulator:
    return PublisherSimulator()


@pytest.fixture
def accounts() -> AccountsSimulator:
    return AccountsSimulator()


@pytest.fixture(scope="session")
def cloud_postgres_url(postgres_admin: None) -> Iterator[str]:
    """One fresh database for this session's cloud tests (emptied before each test)."""
    with fresh_database() as url:
        yield url


def _empty_tables(url: str) -> None:
    """Each test starts from empty tables (a new database per test costs ~0.25 s)."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    url: str = request.getfixturevalue("cloud_postgres_url")
    _empty_tables(url)
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="mqtt://cloud:secret@broker.example:1883",
        token_ttl_s=14 * DAY,
        refresh_before_s=3 * DAY,
        refresh_interval_s=3600,
    )


@pytest.fixture
async def cloud(
    settings: Settings,
    publisher: PublisherSimulator,
    accounts: AccountsSimulator,
    clock: FakeClock,
) -> AsyncIterator[Cloud]:
    app = create_app(settings, publisher=publisher, accounts=accounts, clock=clock)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
            yield Cloud(app, http, publisher, accounts, clock)
