"""Subscription purchases per second through the HTTP API, beside the raw limits of the same run.

The real cloud app is served by uvicorn over TCP on 127.0.0.1, in a child
process (so the load generator does not share its interpreter). Tokens go
to an in-memory ``PublisherSimulator`` (no broker; the purchased
installations have no devices, so nothing is signed anyway). Two partners
buy Remote Services for N installations each, ``--concurrency`` requests in
flight:

- an invoiced partner: the order is invoiced on save (no card round trip);
- a card partner paying with the sandbox test card: the order is charged
  now through ``SandboxPaymentProvider`` (in-process, no network).

Each purchase is four transactions (access check, order, subscription with
audit and grant, order link) plus the invoice PDF and e-mail for invoices.
Beside them, in the same run and on the same database: one-row INSERT +
COMMIT transactions per second (the write floor), and authenticated no-op
``GET /api/v1/subscriptions/catalogue`` requests per second through the same
server (the HTTP + auth floor). Databases: a temp SQLite file and a scratch
PostgreSQL database on 127.0.0.1:5432, dropped after.

    python bench/bench_purchases.py --purchases 1000 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from databases import raw_insert_rate, scratch_database
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, insert, select

from broker.mosquitto import find_free_port
from cloud.accounts.apikeys import create_api_key
from cloud.accounts.companies import create_company
from cloud.accounts.rules import PaymentType, Role
from cloud.accounts.users import create_user
from cloud.billing.payments import CARD_OK
from cloud.database import Store
from cloud.devices import memberships
from cloud.devices.rules import DeviceKind
from cloud.devices.tables import DeviceRow, InstallationRow
from cloud.health.tables import HealthStateRow
from cloud.settings import CloudSettings
from cloud.subscriptions.tables import SubscriptionRow

PRODUCT = "TSF16100"


@dataclass(frozen=True, slots=True)
class Figures:
    database: str
    invoice_rps: float
    card_rps: float
    noop_get_rps: float
    raw_insert_rps: float


def _serve(url: str, data_dir: str, port: int) -> None:
    """The child process: the real app under uvicorn (until terminated)."""
    import logging

    import uvicorn

    from cloud.app import create_app
    from cloud.testing import AccountsSimulator, PublisherSimulator

    logging.basicConfig(level=logging.ERROR)
    settings = CloudSettings(data_dir=Path(data_dir), database_url=url, http_port=port)
    app = create_app(settings, publisher=PublisherSimulator(), accounts=AccountsSimulator())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _setup(store: Store, *, n: int) -> dict[str, tuple[str, list[str]]]:
    """Per mode (invoice, card): a partner's API key and ``n`` installations it integrates."""
    now = int(time.time())
    out: dict[str, tuple[str, list[str]]] = {}
    for mode in ("invoice", "card"):
        installations = [f"{mode}-{i:06d}" for i in range(n)]
        with store.transaction() as tx:
            tx.execute(
                insert(InstallationRow),
                [{"id": i, "name": f"Site {i}", "created_at": now} for i in installations],
            )
            # connected (a purchase needs that): each has a gateway that reported just now
            gateways = [
                {
                    "id": f"gw-{i}",
                    "installation_id": i,
                    "kind": DeviceKind.GATEWAY,
                    "mqtt_password_hash": "-",
                    "created_at": now,
                }
                for i in installations
            ]
            tx.execute(insert(DeviceRow), gateways)
            tx.execute(
                insert(HealthStateRow),
                [{"device_id": g["id"], "last_seen": now} for g in gateways],
            )
            company = create_company(
                tx,
                name=f"Bench SI ({mode})",
                partner_id=None,
                payment_type=PaymentType(mode),
                actor="system:bench",
                now=now,
            ).id
            for inst in installations:
                memberships.add_integrator(tx, inst, company, actor="system:bench", now=now)
            user = create_user(
                tx,
                email=f"si-{mode}@bench.example",
                name=f"Bench {mode} partner",
                password="correct horse battery staple",
                role=Role.PARTNER,
                company_id=company,
                actor="system:bench",
                now=now,
            ).id
        key = create_api_key(store, name=f"bench {mode}", now=now, user_id=user).key
        out[mode] = (key, installations)
    return out


async def _wait_ready(base_url: str, process: multiprocessing.process.BaseProcess) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        for _ in range(400):
            if not process.is_alive():
                raise RuntimeError("the cloud process exited during startup")
            try:
                if (await http.get("/api/v1/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the cloud did not become ready in 20 s")


async def _buy(http: httpx.AsyncClient, mode: str, installations: list[str], i: int) -> None:
    body: dict[str, str] = {"installation_id": installations[i], "product": PRODUCT}
    if mode == "card":
        body |= {"pay_with": "card", "card_token": CARD_OK}
    r = await http.post("/api/v1/subscriptions", json=body)
    if r.status_code != 201 or r.json()["order_status"] != "Succeed":
        raise RuntimeError(f"purchase failed: {r.status_code} {r.text}")


async def _noop(http: httpx.AsyncClient, i: int) -> None:
    r = await http.get("/api/v1/subscriptions/catalogue")
    if r.status_code != 200:
        raise RuntimeError(f"catalogue: {r.status_code} {r.text}")


async def _rate(
    n: int,
    request: Callable[[int], Awaitable[None]],
    *,
    concurrency: int,
    progress: Progress,
    label: str,
) -> float:
    """Requests per second of ``request(0..n-1)`` with ``concurrency`` in flight."""
    task = progress.add_task(label, total=n)
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await request(i)
            progress.advance(task)

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for w in range(concurrency):
            tasks.create_task(worker(), name=f"client-{w}")
    return n / (time.perf_counter() - start)


async def _run(kind: str, *, n: int, concurrency: int, progress: Progress) -> Figures:
    with scratch_database(kind) as url, tempfile.TemporaryDirectory(prefix="entitle-b-") as root:
        store = await asyncio.to_thread(Store.open, url)  # migrates before the server starts
        setup = await asyncio.to_thread(_setup, store, n=n)
        port = find_free_port()
        process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(url, root, port), name="cloud", daemon=True
        )
        process.start()
        base_url = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(base_url, process)
            limits = httpx.Limits(max_connections=concurrency)
            rates: dict[str, float] = {}
            for mode, (key, installations) in setup.items():
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(
                    base_url=base_url, headers=headers, limits=limits, timeout=30
                ) as http:
                    if mode == "invoice":
                        rates["noop"] = await _rate(
                            n,
                            functools.partial(_noop, http),
                            concurrency=concurrency,
                            progress=progress,
                            label=f"{kind} GET",
                        )
                    rates[mode] = await _rate(
                        n,
                        functools.partial(_buy, http, mode, installations),
                        concurrency=concurrency,
                        progress=progress,
                        label=f"{kind} {mode}",
                    )
        finally:
            process.terminate()
            await asyncio.to_thread(process.join, 10)
        with store.transaction() as tx:
            bought = tx.scalar(select(func.count()).select_from(SubscriptionRow))
        if bought != 2 * n:
            raise RuntimeError(f"expected {2 * n} subscriptions, found {bought}")
        raw = await asyncio.to_thread(raw_insert_rate, store.engine, rows=min(n, 2000))
        store.close()
    return Figures(kind, rates["invoice"], rates["card"], rates["noop"], raw)


async def main(n: int, databases: list[str], concurrency: int) -> None:
    console = Console()
    results = []
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console) as progress:
        for kind in databases:
            results.append(await _run(kind, n=n, concurrency=concurrency, progress=progress))
    table = Table(
        title=f"{n:,} purchases per partner, {concurrency} in flight, uvicorn over TCP "
        "(1 worker process)"
    )
    table.add_column("database")
    for name in (
        "invoiced purchases/s",
        "card+sandbox purchases/s",
        "no-op auth GET req/s",
        "raw INSERT+COMMIT/s",
    ):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            r.database,
            f"{r.invoice_rps:,.0f}",
            f"{r.card_rps:,.0f}",
            f"{r.noop_get_rps:,.0f}",
            f"{r.raw_insert_rps:,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purchases", type=int, default=1000, help="per partner")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.purchases, args.databases.split(","), args.concurrency))
