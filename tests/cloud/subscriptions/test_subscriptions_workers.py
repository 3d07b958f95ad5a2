"""Two cloud workers on one PostgreSQL database run the renewal job at the same time, many
times (must-show 5): exactly one order and one card charge per renewal attempt, and no
transition lost (every paid renewal extends its subscription exactly once)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from cloud import create_app
from cloud.accounts.tables import AuditRow
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow
from cloud.devices import memberships
from cloud.notifications.tables import NotificationRow
from cloud.settings import CloudSettings
from cloud.subscriptions.tables import SubscriptionOrderRow, SubscriptionRow
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.harness import (
    DAY,
    client,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)

SUBSCRIPTIONS = 12


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


def _renewals(app) -> object:
    [job] = [j for j in app.state.cloud.jobs.jobs if j.name == "subscription-renewals"]
    return job


async def test_two_workers_charge_each_renewal_once_and_lose_no_transition(
    postgres_url: str, tmp_path: Path
) -> None:
    clock = TestClock(ts(2026, 1, 31))
    app_a = create_app(
        _settings(tmp_path, postgres_url, "a"),
        publisher=PublisherSimulator(),
        accounts=AccountsSimulator(),
        clock=clock,
    )
    async with running(app_a):
        # worker B shares the database and the issuer keys (same data dir), not the process
        app_b = create_app(
            _settings(tmp_path, postgres_url, "a"),
            publisher=PublisherSimulator(),
            accounts=AccountsSimulator(),
            clock=clock,
        )
        async with running(app_b):
            admin = new_api_key(app_a)
            company = new_company(app_a, name="SI", payment_type="card")
            uid = new_user(app_a, role="partner", company_id=company)
            subs: dict[str, str] = {}
            async with client(app_a, admin) as ops, client(app_a, user_api_key(app_a, uid)) as si:
                for i in range(SUBSCRIPTIONS):
                    inst = (await ops.post("/api/v1/installations", json={"name": f"s{i}"})).json()[
                        "id"
                    ]
                    with app_a.state.cloud.store.transaction() as tx:
                        memberships.add_integrator(tx, inst, company, actor="t", now=clock())
                    r = await si.post(
                        "/api/v1/subscriptions",
                        json={
                            "installation_id": inst,
                            "product": "TSF16100",
                            "card_token": CARD_OK,
                        },
                    )
                    assert r.status_code == 201, r.text
                    subs[r.json()["subscription"]["id"]] = inst
                declining = set(list(subs)[: SUBSCRIPTIONS // 2])
                for sub_id in declining:  # the purchaser puts a declining card on file
                    card = {"card_token": CARD_DECLINED}
                    r = await si.put(f"/api/v1/subscriptions/{sub_id}/card", json=card)
                    assert r.status_code == 200, r.text

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

    keys = Counter(o.idempotency_key for o in orders)
    assert all(n == 1 for n in keys.values())
    renewal_ids = {o.id for o in orders}
    charged = Counter(
        int(e.idempotency_key.split(":")[1]) for p in providers for e in p.ledger.values()
    )
    # one card charge per renewal order, across both workers' payment providers
    assert {i: charged[i] for i in renewal_ids} == dict.fromkeys(renewal_ids, 1)
    paying = set(subs) - declining
    # the paying subscriptions (one purchaser, one card, one month): each renewed exactly
    # once, by one succeeded order (no double, no loss). Known limit, not asserted here: two
    # workers that tick parts of one purchaser's month at the same moment (SKIP LOCKED) each
    # place a consolidated order for their part, so the month can have two orders; one
    # worker always places one (tests/cloud/subscriptions/test_renewals_consolidated.py).
    succeeded = [o for o in orders if o.status == "Succeed"]
    renewed = Counter(lk.subscription_id for o in succeeded for lk in links[o.id])
    assert renewed == dict.fromkeys(paying, 1)
    for sub_id in paying:
        assert rows[sub_id].ends_at == ts(2028, 2, 1) and rows[sub_id].status == "active"
        assert paid_audits[sub_id] == 1
    # the declining ones (one card): 11 attempts (1, 4, ... 31 Jan), each charged once in an
    # order of declining subscriptions only (the whole order is retried), one mail each per
    # attempt; expired
    failed = [o for o in orders if o.status == "Failed"]
    assert all({lk.subscription_id for lk in links[o.id]} <= declining for o in failed)
    attempts = Counter(lk.subscription_id for o in failed for lk in links[o.id])
    assert attempts == dict.fromkeys(declining, 11)
    for sub_id in declining:
        assert rows[sub_id].status == "expired" and rows[sub_id].ends_at == ts(2027, 2, 1)
    assert len(failed_mails) == len(set(failed_mails)) == 11 * len(declining)
