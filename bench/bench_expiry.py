"""Expiry sweep: N subscriptions unpaid at one common end, expired by the real RenewalJob.

Seeds N installations, each with an active Remote Services subscription whose
renewal charges all failed (so it is due exactly at its end) and the service
grant it drives, by bulk INSERTs through SQLAlchemy core; optionally one
device per installation. Then it sets the clock one second past the end and
times ``RenewalJob.run_once()`` passes until no subscription is due (the
set-based sweep: batches of 1000, one statement per effect: the states
(version-checked), the audit entries, the "expired" e-mails, the ended grants
and the devices queued for a new token; on PostgreSQL two threads sweep at
once, ``--sweepers`` to compare). With devices, the re-sign queue is
then drained by the real ``ResignJob`` and the time until every device's
token is signed and published is reported, in two cases:

- ``sign``: the devices have no token yet, so every one is signed and
  published (the raw signing and publishing throughput);
- ``skip``: each device holds a current token whose ``until`` is the term's
  end (what a device holds when its subscription expires): nothing changes on
  the device before that token expires, so the drain skips the signature.

Tokens go to an in-memory ``PublisherSimulator``: the MQTT hop is not in
these figures. Beside them, in the same run and database: bare Ed25519
signatures/s (``cryptography``, a 300-byte message) and full token
signatures/s (``Signer.sign``), one bulk ``UPDATE`` of N rows, and the raw
single-row UPDATE rate in batches of 100.

    python bench/bench_expiry.py --subscriptions 100000 --databases sqlite,postgresql
    python bench/bench_expiry.py --databases postgresql --devices none --sweepers 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from databases import raw_update_rate, scratch_database
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import BigInteger, Column, Integer, MetaData, func, insert, select, update
from sqlalchemy import Table as SqlTable
from sqlalchemy.engine import Engine

from cloud.accounts.rules import Role
from cloud.accounts.users import create_user
from cloud.billing.orders import Billing
from cloud.database import Store
from cloud.devices.issuing import IssuingService
from cloud.devices.jobs import ResignJob
from cloud.devices.rules import GrantStatus
from cloud.devices.rules.installations import DeviceKind
from cloud.devices.signer import Signer
from cloud.devices.tables import DeviceRow, GrantRow, InstallationRow, TokenRow
from cloud.settings import CloudSettings
from cloud.subscriptions.jobs import RenewalJob
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import Status, Subscription, due_at
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.tables import SubscriptionRow
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator
from protocol.token import Claims

END = 1_801_440_000  # 2027-02-01T00:00:00Z: every subscription ends here
YEAR_BEFORE = 1_769_904_000  # 2026-02-01T00:00:00Z
PRODUCT = product("TSF16100")
_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Sweep:
    database: str
    devices: str  # none | sign | skip
    n: int
    seed_s: float
    sweep_s: float
    sweep_cpu_s: float  # this process's CPU (PostgreSQL's own work is not in it)
    passes: int
    tokens_s: float | None  # from the sweep's start until every queued device is done
    signed: int
    skipped: int
    published: int
    raw_update_rps: float
    bulk_update_s: float


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


def _seed(
    store: Store, *, n: int, devices: str, epoch: int, ttl_s: int, progress: Progress
) -> None:
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
            if devices != "none":
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
            if devices == "skip":  # a current token carrying the term's end, as issued
                ent = {PRODUCT.feature: {**PRODUCT.params, "until": END}}
                connection.execute(
                    insert(TokenRow),
                    [
                        {
                            "device_id": f"gw-{i:07d}",
                            "ver": 1,
                            "epoch": epoch,
                            "cti": i.to_bytes(16, "big"),
                            "iat": END - 3600,
                            "exp": END - 3600 + ttl_s,
                            "min_until": END,
                            "token": b"bench: not verified by the drain",
                            "claims": {"ent": ent},
                            "published_at": END - 3600,
                        }
                        for i in ids
                    ],
                )
        progress.advance(task, len(ids))
    # A database that holds these rows has statistics (autovacuum analyzes a table after
    # bulk changes, within its minute's nap); straight after a bulk load it has none, and
    # PostgreSQL then plans each batch's "id = ANY(...)" updates as scans of the whole
    # table (seen with EXPLAIN: 10 ms a batch for the grants alone).
    with store.engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")


def _due(store: Store) -> int:
    with store.transaction() as tx:
        query = select(func.count()).select_from(SubscriptionRow)
        query = query.where(SubscriptionRow.due_at.is_not(None), SubscriptionRow.due_at <= END + 1)
        return int(tx.scalar(query) or 0)


async def _sweep(
    url: str, *, n: int, devices: str, label: str, progress: Progress, sweepers: int | None = None
) -> Sweep:
    with tempfile.TemporaryDirectory(prefix="entitle-bench-") as root:
        settings = CloudSettings(data_dir=Path(root), database_url=url)
        store = await asyncio.to_thread(Store.open, url)
        try:
            signer = Signer.load_or_create(settings.keys_dir)
            start = time.perf_counter()
            await asyncio.to_thread(
                _seed,
                store,
                n=n,
                devices=devices,
                epoch=signer.keyset.epoch,
                ttl_s=settings.token_ttl_s,
                progress=progress,
            )
            seed_s = time.perf_counter() - start
            clock = TestClock(END + 1)
            publisher = PublisherSimulator()
            issuing = IssuingService(
                store,
                signer,
                publisher,
                AccountsSimulator(),
                ttl_s=settings.token_ttl_s,
                clock=clock,
            )
            billing = Billing.from_settings(settings, store, clock=clock)
            job = RenewalJob(
                SubscriptionService(store, issuing, billing, clock=clock),
                clock=clock,
                max_batches=n,
                sweepers=sweepers,
            )
            resign = ResignJob(issuing, refresh_before_s=settings.refresh_before_s, batch=500)
            task = progress.add_task(f"sweep {label}", total=n)
            passes = 0
            start, cpu = time.perf_counter(), time.process_time()
            while True:
                report = await job.run_once()
                passes += 1
                progress.advance(task, report.ticked)
                if report.ticked == 0:
                    break
            sweep_s = time.perf_counter() - start
            sweep_cpu_s = time.process_time() - cpu
            tokens_s = None
            signed = skipped = published = 0
            if devices != "none":
                drained = await resign.run_once()
                tokens_s = time.perf_counter() - start
                signed, skipped, published = drained.signed, drained.skipped, drained.published
                left = await asyncio.to_thread(lambda: issuing.resign_counters().queued)
                if left or signed + skipped != n:
                    raise RuntimeError(f"{left} devices still queued, {signed + skipped} of {n}")
                if devices == "sign" and published != n:
                    raise RuntimeError(f"{published} of {n} tokens published")
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
            bulk = await asyncio.to_thread(_bulk_update_s, store.engine, rows=n)
            return Sweep(
                label.split()[0],
                devices,
                n,
                seed_s,
                sweep_s,
                sweep_cpu_s,
                passes,
                tokens_s,
                signed,
                skipped,
                published,
                raw,
                bulk,
            )
        finally:
            store.close()


def _bulk_update_s(engine: Engine, *, rows: int) -> float:
    """Seconds of one ``UPDATE`` of ``rows`` rows (one statement, one commit)."""
    meta = MetaData()
    table = SqlTable(
        "bench_bulk", meta, Column("id", Integer, primary_key=True), Column("at", BigInteger)
    )
    meta.drop_all(engine)
    meta.create_all(engine)
    try:
        with engine.begin() as connection:
            connection.execute(table.insert(), [{"id": i, "at": 0} for i in range(rows)])
        start = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(update(table).values(at=table.c.at + 1))
        return time.perf_counter() - start
    finally:
        table.drop(engine)


def _signs_per_s(seconds: float = 2.0) -> tuple[float, float]:
    """(bare Ed25519 signatures/s of a 300-byte message, full tokens/s via Signer.sign)."""
    key = Ed25519PrivateKey.generate()
    message = bytes(300)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.sign(message)
        count += 1
    bare = count / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory(prefix="entitle-bench-") as root:
        signer = Signer.load_or_create(Path(root))
        claims = Claims(
            sub="gw-0000001",
            iat=END,
            nbf=END,
            exp=END + 14 * 86400,
            cti=bytes(16),
            ver=2,
            ent={},
            iss="entitle",
            inst="inst-0000001",
            epoch=signer.keyset.epoch,
        )
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            signer.sign(claims)
            count += 1
        return bare, count / (time.perf_counter() - start)


async def main(
    n: int, databases: list[str], device_modes: list[str], sweepers: int | None = None
) -> None:
    console = Console()
    results: list[Sweep] = []
    bare, tokens = await asyncio.to_thread(_signs_per_s)
    columns = [*Progress.get_default_columns()[:-1], MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, BarColumn(bar_width=0), console=console) as progress:
        for kind in databases:
            for mode in device_modes:
                with scratch_database(kind) as url:
                    label = f"{kind} devices:{mode}"
                    results.append(
                        await _sweep(
                            url,
                            n=n,
                            devices=mode,
                            label=label,
                            progress=progress,
                            sweepers=sweepers,
                        )
                    )
    table = Table(title=f"expiry sweep of {n:,} subscriptions due at once (RenewalJob + ResignJob)")
    for name in ("database", "devices", "seed s", "sweep s", "cpu s", "expired/s", "tokens s"):
        table.add_column(name, justify="right")
    for name in ("signed", "skipped", "published", "bulk UPDATE s", "raw UPDATE rows/s"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            r.database,
            r.devices,
            f"{r.seed_s:.1f}",
            f"{r.sweep_s:.2f}",
            f"{r.sweep_cpu_s:.2f}",
            f"{r.n / r.sweep_s:,.0f}",
            "-" if r.tokens_s is None else f"{r.tokens_s:.1f}",
            f"{r.signed:,}",
            f"{r.skipped:,}",
            f"{r.published:,}",
            f"{r.bulk_update_s:.2f}",
            f"{r.raw_update_rps:,.0f}",
        )
    console.print(table)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(f"load average at the end: {load} on {os.cpu_count()} CPUs")
    console.print(
        f"same run: bare Ed25519 {bare:,.0f} signs/s (300-byte message); "
        f"full tokens {tokens:,.0f}/s (Signer.sign, CBOR + COSE_Sign1). "
        "Goals: sweep < 5 s without devices; every device's token done < 30 s. "
        "Publishing is in-memory (PublisherSimulator)."
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--devices",
        default="none,sign,skip",
        help="comma-separated: none (no devices), sign (one device per installation, no "
        "token yet: every one signed), skip (one device each, its token ends with the term)",
    )
    parser.add_argument(
        "--sweepers",
        type=int,
        default=None,
        help="threads sweeping at once (default: the job's own, 2 on PostgreSQL, 1 on SQLite)",
    )
    args = parser.parse_args()
    modes = args.devices.split(",")
    asyncio.run(main(args.subscriptions, args.databases.split(","), modes, args.sweepers))
