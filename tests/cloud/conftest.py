"""Fixtures: a fake clock, the port simulators, SQLite and PostgreSQL databases, the app.

Every cloud test also fails if anything shaped like an API key, a PEM
private key or an argon2 password hash was logged while it ran (at whatever
level the test captured).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from cloud import create_app
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.broker_fixtures import broker  # noqa: F401  (fixture)
from tests.cloud.harness import DAY, Cloud, FakeClock, client, new_api_key, running
from tests.database_fixtures import fresh_database, postgres_admin, postgres_url  # noqa: F401
from tests.smtp_fixtures import smtp_server  # noqa: F401  (fixture)

_SECRET_SHAPES = re.compile(r"ek_[A-Za-z0-9_-]{43}|PRIVATE KEY-----|\$argon2")


@pytest.fixture(autouse=True)
def _no_secret_shapes_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    leaked = [
        f"{r.name}:{r.levelname}"
        for r in records
        if _SECRET_SHAPES.search(f"{r.getMessage()} {r.exc_text or ''}")
    ]
    assert not leaked, f"an API key or a private key was logged by: {leaked}"


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
def cloud_postgres_url(postgres_admin: None) -> Iterator[str]:  # noqa: F811 (the fixture)
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
def settings(tmp_path: Path, database_url: str) -> CloudSettings:
    return CloudSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="mqtt://cloud:secret@broker.example:1883",
        token_ttl_s=14 * DAY,
        refresh_before_s=3 * DAY,
        refresh_interval_s=3600,
        # Jobs that act on what a test stores (the verdict of a device that reported, a
        # gap in its reports) run their start-up pass only: a test that needs a pass runs
        # it, and a pass every 10 s of real time would race a test's "no row changed"
        # snapshot on a loaded machine (a verdict row appeared in one CI run).
        health_verdict_interval_s=3600,
        health_gap_interval_s=3600,
    )


@pytest.fixture
async def cloud(
    settings: CloudSettings,
    publisher: PublisherSimulator,
    accounts: AccountsSimulator,
    clock: FakeClock,
) -> AsyncIterator[Cloud]:
    """The app running in-process; ``cloud.http`` authenticates with a fresh API key."""
    app = create_app(settings, publisher=publisher, accounts=accounts, clock=clock)
    async with running(app):
        api_key = new_api_key(app)
        async with client(app, api_key) as http:
            yield Cloud(app, http, publisher, accounts, clock, api_key)
