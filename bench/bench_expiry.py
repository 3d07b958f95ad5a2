"""Expiry sweep: N subscriptions unpaid at one common end, expired by the real RenewalJob.

Seeds N installations, each with an active Remote Services subscription whose
renewal charges all failed (so it is due exactly at its end) and the service
grant it drives, by bulk INSERTs through SQLAlchemy core; optionally one
device per installation. Then it sets the clock one second past the end and
times ``RenewalJob.run_once()`` passes until no subscription is due. Each
expiry is the job's full transaction: the row (version-checked), its audit
entry, the "expired" e-mail in the outbox, the ended grant, and, with
devices, a freshly signed token per device (published to an in-memory
``PublisherSimulator``: the MQTT hop is not in these figures). Beside it, the
same database's raw single-row UPDATE rate in batches of 100.

    python bench/bench_expiry.py --subscriptions 100000 --databases sqlite,postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from databases import raw_update_rate, scratch_database
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, insert, select

from cloud.accounts.rules import Role
from cloud.accounts.users import create_user
from cloud.billing.orders import Billing
from cloud.database import Store
from cloud.devices.issuing import IssuingService
from cloud.devices.rules import GrantStatus
from cloud.devices.rules.installations import DeviceKind
from cloud.devices.signer import Signer
from cloud.devices.tables import DeviceRow, GrantRow, InstallationRow
from cloud.settings import CloudSettings
from cloud.subscriptions.jobs import RenewalJob
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import Status, Subscription, due_at
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.tables import SubscriptionRow
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator

END = 1_801_440_000  # 2027-02-01T00:00:00Z: every subscription ends here
YEAR_BEFORE = 1_769_904_000  # 2026-02-01T00:00:00Z
PRODUCT = product("TSF16100")
_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Sweep:
    database: str
    devices: bool
    n: int
    seed_s: float
    sweep_s: float
    passes: int
    raw_update_rps: float


def _state(sub_id: str, installation_id: str, purchaser: int) -> Subscription:
    """A subscription whose 11 renewal charges were declined: nothing is due before its end."""
    return Subscription(
        id=sub_id,
        installation_id=installation_id,
        product=PRODUCT,
        purchaser=purchaser,
        status=Status.ACTIVE,
        term_months=12,
        start=YEAR_BEFORE,
        end=END,
        notice_for=END,
        attempts=11,
    )


def _seed(store: Store, *, n: int, devices: bool, progress: Progress) -> None:
    now = YEAR_BEFORE
    with store.transaction() as tx:
        buyer = create_user(
            tx,
            email="owner@bench.example",
            name="Bench owner",
            password="correct horse battery staple",
            role=Role.OWNER,
            company_id=None,
            actor="system:bench",
            now=now,
        ).id
    probe = _state("sub_probe", "inst", buyer)
    assert due_at(probe) == END, "the seeded state must come due exactly at its end"
    task = progress.add_task("seed", total=n)
    for first in range(0, n, _CHUNK):
        ids = range(first, min(n, first + _CHUNK))
        with store.engine.begin() as connection:
            connection.execute(
                insert(InstallationRow),
                [{"id": f"inst-{i:07d}", "name": f"Site {i}", "created_at": now} for i in ids],
            )
            connection.execute(
                insert(GrantRow),
                [
                    {
                        "installation_id": f"inst-{i:07d}",
                        "feature": PRODUCT.feature,
                        "params": dict(PRODUCT.params),
                        "valid_until": END,
                        "source": "subscription",
                        "status": GrantStatus.ACTIVE,
                        "created_at": now,
                        "updated_at": now,
                        "ended_at": None,
                    }
                    for i in ids
                ],
            )
            connection.execute(
                insert(SubscriptionRow),
                [
                    {
                        "id": f"sub_{i:016x}",
                        "installation_id": f"inst-{i:07d}",
                        "service": PRODUCT.feature,
                        "product_code": PRODUCT.code,
                        "purchaser_id": buyer,
                        "pay_with": "card",
                        "card_token": "4000000000000002",
                        "status": Status.ACTIVE,
                        "term_months": probe.term_months,
                        "starts_at": probe.start,
                        "ends_at": probe.end,
                        "auto_renew": probe.auto_renew,
                        "awaiting_payment": False,
                        "notice_for": probe.notice_for,
                        "next_notice_at": None,
                        "next_charge_at": None,
                        "attempts": probe.attempts,
                        "charging": None,
                        "charge_sent_at": None,
                        "next_retry_at": None,
                        "due_at": END,
                        "created_at": now,
                        "updated_at": now,
                        "version": 1,
                    }
                    for i in ids
                ],
            )
            if devices:
                connection.execute(
                    insert(DeviceRow),
                    [
                        {
                            "id": f"gw-{i:07d}",
                            "installation_id": f"inst-{i:07d}",
                            "kind": DeviceKind.GATEWAY,
                            "mqtt_password_hash": "bench: never logs in",
                            "created_at": now,
                        }
                        for i in ids
                    ],
                )
        progress.advance(task, len(ids))


def _due(store: Store) -> int:
    with store.transaction() as tx:
        query = select(func.count()).select_from(SubscriptionRow)
        query = query.where(SubscriptionRow.due_at.is_not(None), SubscriptionRow.due_at <= END + 1)
        return int(tx.scalar(query) or 0)


async def _sweep(url: str, *, n: int, devices: bool, label: str, progress: Progress) -> Sweep:
    with tempfile.TemporaryDirectory(prefix="entitle-bench-") as root:
        settings = CloudSettings(data_dir=Path(root), database_url=url)
        store = await asyncio.to_thread(Store.open, url)
        try:
            start = time.perf_counter()
            await asyncio.to_thread(_seed, store, n=n, devices=devices, progress=progress)
            seed_s = time.perf_counter() - start
            clock = TestClock(END + 1)
            signer = Signer.load_or_create(settings.keys_dir)
            issuing = IssuingService(
                store,
                signer,
                PublisherSimulator(),
                AccountsSimulator(),
                ttl_s=settings.token_ttl_s,
                clock=clock,
            )
            billing = Billing.from_settings(settings, store, clock=clock)
            job = RenewalJob(SubscriptionService(store, issuing, billing, clock=clock), clock=clock)
            task = progress.add_task(f"sweep {label}", total=n)
            passes = 0
            start = time.perf_counter()
            while True:
                report = await job.run_once()
                passes += 1
                progress.advance(task, report.ticked)
                if report.ticked == 0:
                    break
            sweep_s = time.perf_counter() - start
            left = await asyncio.to_thread(_due, store)
            if left:
                raise RuntimeError(f"{left} subscriptions still due after {passes} passes")
            with store.transaction() as tx:
                expired = tx.scalar(
                    select(func.count())
                    .select_from(SubscriptionRow)
                    .where(SubscriptionRow.status == Status.EXPIRED)
                )
            if expired != n:
                raise RuntimeError(f"expected {n} expired subscriptions, found {expired}")
            raw = await asyncio.to_thread(raw_update_rate, store.engine, rows=min(n, 20_000))
            return Sweep(label.split()[0], devices, n, seed_s, sweep_s, passes, raw)
        finally:
            store.close()


async def main(n: int, databases: list[str], device_modes: list[bool]) -> None:
    console = Console()
    results: list[Sweep] = []
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, BarColumn(bar_width=0), console=console) as progress:
        for kind in databases:
            for with_devices in device_modes:
                with scratch_database(kind) as url:
                    label = f"{kind} {'1 device/inst' if with_devices else 'no devices'}"
                    results.append(
                        await _sweep(url, n=n, devices=with_devices, label=label, progress=progress)
                    )
    table = Table(title=f"expiry sweep of {n:,} subscriptions due at once (RenewalJob)")
    for name in ("database", "devices", "seed s", "sweep s", "passes", "expired/s"):
        table.add_column(name, justify="right")
    table.add_column("raw UPDATE rows/s (same DB)", justify="right")
    for r in results:
        table.add_row(
            r.database,
            "1/inst" if r.devices else "none",
            f"{r.seed_s:.1f}",
            f"{r.sweep_s:.1f}",
            str(r.passes),
            f"{r.n / r.sweep_s:,.0f}",
            f"{r.raw_update_rps:,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--devices",
        choices=["both", "none", "one"],
        default="both",
        help="run without devices, with one device per installation, or both",
    )
    args = parser.parse_args()
    modes = {"both": [False, True], "none": [False], "one": [True]}[args.devices]
    asyncio.run(main(args.subscriptions, args.databases.split(","), modes))
