"""Two cloud workers on one database run the renewal job at the same time (must-show 5):
exactly one order and one card charge per renewal attempt, and no transition lost (every
paid renewal extends its subscription exactly once) — and one renewal order, one invoice,
per purchaser and month (TTecomm), even when the workers tick parts of the month each."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloud import create_app
from cloud.accounts.tables import AuditRow
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.notifications.tables import NotificationRow
from cloud.settings import CloudSettings
from cloud.subscriptions import jobs as renewal_jobs
from cloud.subscriptions import queries as subscription_queries
from cloud.subscriptions.charging import RenewalCharger
from cloud.subscriptions.jobs import RenewalJob
from cloud.subscriptions.tables import SubscriptionOrderRow, SubscriptionRow
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.harness import (
    DAY,
    client,
    connect,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)
from tests.waiting import HANG_S

SUBSCRIPTIONS = 12
SUBSCRIPTION_CENTS = 6000  # Remote Services (TSF16100), a year


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


def _settings(tmp_path: Path, url: str, name: str) -> CloudSettings:
    return CloudSettings(
        data_dir=tmp_path / name,
        database_url=url,
        broker_url="mqtt://cloud:secret@broker.example:1883",
        test_clock=True,
        refresh_interval_s=3600,
    )


def _app(tmp_path: Path, url: str, clock: TestClock) -> Any:
    """A cloud worker on ``url`` (the data dir, and so the issuer keys, shared), its
    publisher and broker accounts test doubles, on ``clock``."""
    return create_app(
        _settings(tmp_path, url, "a"),
        publisher=PublisherSimulator(),
        accounts=AccountsSimulator(),
        clock=clock,
    )


def _renewals(app) -> object:
    [job] = [j for j in app.state.cloud.jobs.jobs if j.name == "subscription-renewals"]
    return job


async def _buy(app, clock: TestClock, *, declining: int) -> tuple[dict[str, str], set[str]]:
    """SUBSCRIPTIONS subscriptions of one purchaser (a partner paying by card), all ending
    1 Feb 2027; the first ``declining`` get a declining card. (subscription -> installation,
    the declining ones)."""
    admin = new_api_key(app)
    company = new_company(app, name="SI", payment_type="card")
    uid = new_user(app, role="partner", company_id=company)
    subs: dict[str, str] = {}
    async with client(app, admin) as ops, client(app, user_api_key(app, uid)) as si:
        for i in range(SUBSCRIPTIONS):
            inst = (await ops.post("/api/v1/installations", json={"name": f"s{i}"})).json()["id"]
            await connect(app, ops, inst)
            with app.state.cloud.store.transaction() as tx:
                memberships.add_integrator(tx, inst, company, actor="t", now=clock())
            r = await si.post(
                "/api/v1/subscriptions",
                json={"installation_id": inst, "product": "TSF16100", "card_token": CARD_OK},
            )
            assert r.status_code == 201, r.text
            subs[r.json()["subscription"]["id"]] = inst
        declines = set(list(subs)[:declining])
        for sub_id in declines:  # the purchaser puts a declining card on file
            card = {"card_token": CARD_DECLINED}
            r = await si.put(f"/api/v1/subscriptions/{sub_id}/card", json=card)
            assert r.status_code == 200, r.text
    return subs, declines


def _invoice_mails(tx, order_ids: set[int]) -> list[str]:
    keys = {f"invoice:{i}" for i in order_ids}
    return [
        k
        for k in tx.scalars(
            select(NotificationRow.dedupe_key).where(NotificationRow.kind == "invoice")
        )
        if k in keys
    ]


async def test_two_workers_charge_each_renewal_once_and_lose_no_transition(
    postgres_url: str, tmp_path: Path
) -> None:
    clock = TestClock(ts(2026, 1, 31))
    app_a = _app(tmp_path, postgres_url, clock)
    async with running(app_a):
        # worker B shares the database and the issuer keys (same data dir), not the process
        app_b = _app(tmp_path, postgres_url, clock)
        async with running(app_b):
            subs, declining = await _buy(app_a, clock, declining=SUBSCRIPTIONS // 2)

            jobs = [_renewals(app_a), _renewals(app_b)]
            clock.set(ts(2026, 12, 31))
            for _ in range(35):  # through 4 Feb 2027: charges, retries, renewals, expiry
                clock.advance(DAY)
                await asyncio.gather(*(job.run_once() for job in jobs for _ in range(4)))

            providers = [app.state.cloud.billing.provider for app in (app_a, app_b)]
            with app_a.state.cloud.store.transaction() as tx:
                orders = tx.scalars(select(OrderRow).where(OrderRow.kind == "renewal")).all()
                rows = {r.id: r for r in tx.scalars(select(SubscriptionRow))}
                links = defaultdict(list)
                for lk in tx.scalars(select(SubscriptionOrderRow)):
                    links[lk.order_id].append(lk)
                paid_audits = Counter(
                    tx.scalars(
                        select(AuditRow.object_id).where(
                            AuditRow.action == "subscription.charge_paid"
                        )
                    )
                )
                failed_mails = tx.scalars(
                    select(NotificationRow.dedupe_key).where(
                        NotificationRow.kind == "charge_failed"
                    )
                ).all()
                invoices = _invoice_mails(tx, {o.id for o in orders})

    keys = Counter(o.idempotency_key for o in orders)
    assert all(n == 1 for n in keys.values())
    renewal_ids = {o.id for o in orders}
    charged = Counter(
        int(e.idempotency_key.split(":")[1]) for p in providers for e in p.ledger.values()
    )
    # one card charge per renewal order, across both workers' payment providers
    assert {i: charged[i] for i in renewal_ids} == dict.fromkeys(renewal_ids, 1)
    paying = set(subs) - declining
    # the paying subscriptions (one purchaser, one card, one month): one order, one invoice
    # mail, whichever worker ticked which subscription; each renewed exactly once (no
    # double, no loss)
    succeeded = [o for o in orders if o.status == "Succeed"]
    assert len(succeeded) == 1
    assert {lk.subscription_id for lk in links[succeeded[0].id]} == paying
    assert invoices == [f"invoice:{succeeded[0].id}"]
    renewed = Counter(lk.subscription_id for o in succeeded for lk in links[o.id])
    assert renewed == dict.fromkeys(paying, 1)
    for sub_id in paying:
        assert rows[sub_id].ends_at == ts(2028, 2, 1) and rows[sub_id].status == "active"
        assert paid_audits[sub_id] == 1
    # the declining ones (one card): 11 attempts (1, 4, ... 31 Jan), each one order of all
    # the declining subscriptions (the whole order is retried), charged once, one mail each
    # per attempt; expired
    failed = [o for o in orders if o.status == "Failed"]
    assert len(failed) == 11 and len(orders) == 12
    assert all({lk.subscription_id for lk in links[o.id]} == declining for o in failed)
    attempts = Counter(lk.subscription_id for o in failed for lk in links[o.id])
    assert attempts == dict.fromkeys(declining, 11)
    for sub_id in declining:
        assert rows[sub_id].status == "expired" and rows[sub_id].ends_at == ts(2027, 2, 1)
    assert len(failed_mails) == len(set(failed_mails)) == 11 * len(declining)


@pytest.mark.parametrize("placing", ["together", "one after the other"])
async def test_two_workers_each_ticking_half_of_a_month_place_one_order(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placing: str
) -> None:
    """The interleaving that used to split a month, forced: worker A and worker B each
    claim half of one purchaser's subscriptions due on the charge day (a batch of half),
    and neither places an order before both have ticked (a barrier before placing); then
    both place at once, or one after the other (the second finds its charges on the
    first's order: it resumes nothing it did not place). One order of every subscription,
    one charge, one invoice mail; the other worker places nothing, and a later pass
    nothing either."""
    clock = TestClock(ts(2026, 1, 31))
    half = SUBSCRIPTIONS // 2
    both_ticked = asyncio.Barrier(2)
    first_in, first_done = asyncio.Event(), asyncio.Event()
    place_ticked = RenewalCharger.place_ticked

    async def after_both_ticked(self, dues, *, now):
        await both_ticked.wait()
        if placing == "together":
            return await place_ticked(self, dues, now=now)
        if first_in.is_set():  # the second waits until the first has placed and applied
            await first_done.wait()
            return await place_ticked(self, dues, now=now)
        first_in.set()
        try:
            return await place_ticked(self, dues, now=now)
        finally:
            first_done.set()

    apps = [_app(tmp_path, database_url, clock) for _ in range(2)]
    async with running(apps[0]), running(apps[1]):
        subs, _ = await _buy(apps[0], clock, declining=0)
        workers = [
            RenewalJob(app.state.cloud.subscriptions, clock=clock, batch=half, max_batches=1)
            for app in apps
        ]
        clock.set(ts(2027, 1, 1))  # the charge day of every subscription (1 Feb 2027)
        monkeypatch.setattr(RenewalCharger, "place_ticked", after_both_ticked)
        reports = await asyncio.gather(*(w.run_once() for w in workers))
        monkeypatch.undo()
        assert [r.ticked for r in reports] == [half, half]  # each ticked its half
        assert sorted(r.charged for r in reports) == [0, 1]  # one placed, the other nothing
        if placing == "one after the other":  # the second found its charges on that order
            assert sorted(r.resumed for r in reports) == [0, 1]
        later = await asyncio.gather(*(w.run_once() for w in workers))
        assert [r.charged for r in later] == [0, 0]

        providers = [app.state.cloud.billing.provider for app in apps]
        with apps[0].state.cloud.store.transaction() as tx:
            [order] = tx.scalars(select(OrderRow).where(OrderRow.kind == "renewal")).all()
            linked = {
                lk.subscription_id
                for lk in tx.scalars(
                    select(SubscriptionOrderRow).where(SubscriptionOrderRow.order_id == order.id)
                )
            }
            rows = {r.id: r for r in tx.scalars(select(SubscriptionRow))}
            invoices = _invoice_mails(tx, {order.id})
    assert order.status == "Succeed" and linked == set(subs)
    assert order.amount_cents == sum(SUBSCRIPTION_CENTS for _ in subs)
    charges = [e for p in providers for e in p.ledger.values()]
    assert [
        e.idempotency_key for e in charges if e.idempotency_key.startswith(f"order:{order.id}:")
    ] == [f"order:{order.id}:charge:1"]
    assert invoices == [f"invoice:{order.id}"]
    assert all(rows[s].ends_at == ts(2028, 2, 1) for s in subs)


async def test_an_order_gathered_before_more_of_its_month_was_ticked_is_gathered_again(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker gathers half of a purchaser's month (the rest is ticked by another worker
    just after that read, forced by serving the first read half); the order's transaction
    holds the month, sees the whole of it, writes nothing and the worker gathers again:
    one order of every subscription, charged once."""
    clock = TestClock(ts(2026, 1, 31))
    app = _app(tmp_path, database_url, clock)
    reads = []
    unplaced_charges = subscription_queries.unplaced_charges

    def first_read_half(session, *, buyer, end):
        found = unplaced_charges(session, buyer=buyer, end=end)
        reads.append(len(found))
        return found[: len(found) // 2] if len(reads) == 1 else found

    async with running(app):
        subs, _ = await _buy(app, clock, declining=0)
        clock.set(ts(2027, 1, 1))
        monkeypatch.setattr(subscription_queries, "unplaced_charges", first_read_half)
        report = await _renewals(app).run_once()
        monkeypatch.undo()
        assert report.ticked == SUBSCRIPTIONS and report.charged == 1
        assert reads[:2] == [SUBSCRIPTIONS, SUBSCRIPTIONS]  # the gather, then the check
        with app.state.cloud.store.transaction() as tx:
            [order] = tx.scalars(select(OrderRow).where(OrderRow.kind == "renewal")).all()
            linked = {
                lk.subscription_id
                for lk in tx.scalars(
                    select(SubscriptionOrderRow).where(SubscriptionOrderRow.order_id == order.id)
                )
            }
    assert order.status == "Succeed" and linked == set(subs)
    assert order.amount_cents == SUBSCRIPTION_CENTS * SUBSCRIPTIONS
    ledger = app.state.cloud.billing.provider.ledger.values()
    assert [
        e.idempotency_key for e in ledger if e.idempotency_key.startswith(f"order:{order.id}:")
    ] == [f"order:{order.id}:charge:1"]


async def test_one_pass_sweeps_in_two_threads_on_postgresql_each_row_once(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL one pass of the renewal job sweeps with two threads, so the database
    works on one batch while the rule decides the other. Forced here: each thread's first
    batch waits, claimed and uncommitted, until the other holds one too (were the claims
    not disjoint, ``SKIP LOCKED``, the second would wait on the first's row locks and the
    barrier would break). In batches of 2, every one of the twelve subscriptions due on
    its charge day is ticked once, and the month is one order of all twelve."""
    clock = TestClock(ts(2026, 1, 31))
    app = _app(tmp_path, postgres_url, clock)
    both_hold = threading.Barrier(2, timeout=HANG_S)
    first_batches = iter(range(2))
    real_sweep = renewal_jobs.sweep_batch

    def sweep_then_meet(tx, **kwargs):
        done = real_sweep(tx, **kwargs)
        if next(first_batches, None) is not None:
            both_hold.wait()  # BrokenBarrierError: the other never held a batch meanwhile
        return done

    async with running(app):
        subs, _ = await _buy(app, clock, declining=0)
        job = RenewalJob(app.state.cloud.subscriptions, clock=clock, batch=2)
        clock.set(ts(2027, 1, 1))  # the charge day of every subscription (1 Feb 2027)
        monkeypatch.setattr(renewal_jobs, "sweep_batch", sweep_then_meet)
        report = await job.run_once()
        monkeypatch.undo()
        assert (report.ticked, report.charged) == (SUBSCRIPTIONS, 1)
        with app.state.cloud.store.transaction() as tx:
            ticks = Counter(
                tx.scalars(select(AuditRow.object_id).where(AuditRow.action == "subscription.tick"))
            )
            [order] = tx.scalars(select(OrderRow).where(OrderRow.kind == "renewal")).all()
            linked = Counter(
                lk.subscription_id
                for lk in tx.scalars(
                    select(SubscriptionOrderRow).where(SubscriptionOrderRow.order_id == order.id)
                )
            )
    assert ticks == dict.fromkeys(subs, 1)
    assert linked == dict.fromkeys(subs, 1) and order.status == "Succeed"


@pytest.mark.parametrize("sweepers", [1, 2])
async def test_a_sweep_that_fails_raises_its_own_error(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sweepers: int
) -> None:
    """A database error in a sweep comes out of the pass as itself (the job runner logs
    it and tries again), not wrapped in the exception group of the sweeping tasks."""
    from sqlalchemy.exc import OperationalError

    clock = TestClock(ts(2026, 1, 31))
    app = _app(tmp_path, database_url, clock)

    def database_gone(tx, **kwargs):
        raise OperationalError("UPDATE subscriptions", {}, Exception("server closed"))

    async with running(app):
        job = RenewalJob(app.state.cloud.subscriptions, clock=clock, sweepers=sweepers)
        monkeypatch.setattr(renewal_jobs, "sweep_batch", database_gone)
        with pytest.raises(OperationalError):
            await job.run_once()
