"""Test harness of the cloud: a fake clock, the app run in-process, request helpers."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from cloud.accounts.apikeys import create_api_key
from cloud.accounts.rules import PaymentType, Role
from cloud.accounts.users import create_company, create_user
from cloud.app import CloudState
from cloud.database import Base
from cloud.health.ingest import Incoming
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from protocol.health import HealthReport, health_to_json
from protocol.keyset import KeySet, trust_root
from protocol.topics import device_topic

START = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
PASSWORD = "correct horse battery staple"  # every test user's, unless told otherwise


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """Run the app's lifespan in its own task, as a server does, for the block."""
    started = asyncio.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(serve(), name="lifespan")
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # startup failed: raise its error
    jobs = getattr(getattr(app.state, "cloud", None), "jobs", None)
    if jobs is not None:
        # the jobs' start-up passes (e.g. reconciling timed-out charges) must not race
        # the test's first requests
        async with asyncio.timeout(30):
            await jobs.first_passes_done.wait()
    try:
        yield
    finally:
        stop.set()
        await task


def client(app: FastAPI, api_key: str | None = None) -> httpx.AsyncClient:
    """An in-process client of ``app``, sending ``api_key`` as a bearer token if given."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://cloud", headers=headers)


def cli_env(settings: CloudSettings) -> dict[str, str]:
    """Environment for ``entitle`` commands run (CliRunner) against the same data and database."""
    return {
        "ENTITLE_DATA_DIR": str(settings.data_dir),
        "ENTITLE_DATABASE_URL": settings.effective_database_url,
        "ENTITLE_CONFIG": "/nonexistent.toml",  # no entitle.toml from the working directory
    }


def new_api_key(app: FastAPI, name: str = "tests") -> str:
    """Create an API key in the running app's database."""
    state: CloudState = app.state.cloud
    return create_api_key(state.store, name=name, now=state.clock()).key


def new_company(
    app: FastAPI, *, name: str = "Integrator Ltd", payment_type: str = "invoice"
) -> int:
    """Create a partner company in the running app's database; its id."""
    state: CloudState = app.state.cloud
    with state.store.transaction() as tx:
        row = create_company(
            tx,
            name=name,
            partner_id=None,
            payment_type=PaymentType(payment_type),
            actor="system:tests",
            now=state.clock(),
        )
        return row.id


def new_user(
    app: FastAPI,
    *,
    role: str,
    email: str | None = None,
    company_id: int | None = None,
    password: str = PASSWORD,
) -> int:
    """Create a user (a partner gets a new company unless ``company_id``); its id."""
    if role == Role.PARTNER and company_id is None:
        company_id = new_company(app)
    state: CloudState = app.state.cloud
    with state.store.transaction() as tx:
        row = create_user(
            tx,
            email=email or f"{role}-{secrets.token_hex(4)}@customer.example",
            name=f"Test {role}",
            password=password,
            role=Role(role),
            company_id=company_id,
            actor="system:tests",
            now=state.clock(),
        )
        return row.id


def every_row(app: FastAPI) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the running app's database, in primary-key order."""
    state: CloudState = app.state.cloud
    with state.store.transaction() as tx:
        return {
            table.name: [
                tuple(row) for row in tx.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in Base.metadata.sorted_tables
        }


def report_health(
    app: FastAPI, device_id: str, *, seq: int = 1, kind: str = "gateway", fw: str | None = None
) -> None:
    """A health report from ``device_id``, stamped with the app's clock, as the MQTT bridge
    hands it to the ingest: its installation is connected (purchases need that)."""
    state: CloudState = app.state.cloud
    body = HealthReport(
        device_id=device_id, seq=seq, ts=state.clock(), kind=kind, uptime_s=60, fw=fw
    )
    done = state.health_ingest.process(
        [Incoming(device_topic(device_id, "health"), health_to_json(body))]
    )
    assert done.stored == 1, done


async def connect(app: FastAPI, http: httpx.AsyncClient, installation_id: str) -> str:
    """A gateway added to the installation through ``http`` (an admin's client) that has
    just reported (:func:`report_health`): services can be bought for the installation."""
    body = {"installation_id": installation_id, "kind": "gateway"}
    response = await http.post("/api/v1/devices", json=body)
    assert response.status_code == 201, response.text
    device_id = str(response.json()["device_id"])
    report_health(app, device_id)
    return device_id


def user_api_key(app: FastAPI, user_id: int) -> str:
    """An API key acting as the user."""
    state: CloudState = app.state.cloud
    return create_api_key(
        state.store, name=f"user {user_id}", now=state.clock(), user_id=user_id
    ).key


@dataclass
class Cloud:
    """The running app and everything a test looks at; ``http`` sends ``api_key``."""

    app: FastAPI
    http: httpx.AsyncClient
    publisher: PublisherSimulator
    accounts: AccountsSimulator
    clock: FakeClock
    api_key: str

    @property
    def state(self) -> CloudState:
        state: CloudState = self.app.state.cloud
        return state

    async def keyset(self) -> KeySet:
        body = (await self.http.get("/api/v1/keyset")).json()
        return trust_root(base64.b64decode(body["keyset_b64"]))

    async def installation(self, name: str = "Shop") -> str:
        response = await self.http.post("/api/v1/installations", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def device(self, installation_id: str, kind: str = "gateway", **extra: str) -> dict:
        body = {"installation_id": installation_id, "kind": kind, **extra}
        response = await self.http.post("/api/v1/devices", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def report(
        self, device_id: str, *, seq: int = 1, kind: str = "gateway", fw: str | None = None
    ) -> None:
        """A health report from ``device_id``, stamped now (:func:`report_health`)."""
        report_health(self.app, device_id, seq=seq, kind=kind, fw=fw)

    async def connected(self, name: str = "Shop") -> str:
        """A new installation whose gateway has just reported: services can be bought for
        it (a purchase needs a connected installation)."""
        installation_id = await self.installation(name)
        await connect(self.app, self.http, installation_id)
        return installation_id
