"""At most one renewal invoice a month per purchaser (TTecomm), through the API on SQLite and
PostgreSQL: one purchaser's subscriptions ending in one month renew as one order (a line per
subscription, naming its installation), one charge, one invoice mail (read from a real SMTP
server); a decline retries the whole order; giving back one line takes back that line's
subscription only, and a bad line request moves no money."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloud import create_app
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.notifications.queries import notifications
from cloud.notifications.tables import NotificationStatus
from cloud.settings import CloudSettings
from cloud.subscriptions.tables import SubscriptionOrderRow
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.harness import (
    DAY,
    Cloud,
    client,
    connect,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)
from tests.smtp_fixtures import SmtpServer

BUY = "/api/v1/subscriptions"
PRODUCTS = ("TSF16100", "TSF12125")  # Remote Services 60.00 a year, Voice Control 36.00
BUYER = "fitter@integra.example"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


async def _installations(app: Any, admin: httpx.AsyncClient, company: int, n: int) -> list[str]:
    out = []
    for i in range(n):
        r = await admin.post("/api/v1/installations", json={"name": f"Shop {i}"})
        assert r.status_code == 201, r.text
        out.append(r.json()["id"])
        await connect(app, admin, out[-1])
        with app.state.cloud.store.transaction() as tx:
            memberships.add_integrator(tx, out[-1], company, actor="tests", now=0)
    return out


async def _buy_all(si: httpx.AsyncClient, installations: list[str], **pay: str) -> list[str]:
    subs = []
    for inst in installations:
        for code in PRODUCTS:
            r = await si.post(BUY, json={"installation_id": inst, "product": code, **pay})
            assert r.status_code == 201 and r.json()["order_status"] == "Succeed", r.text
            subs.append(r.json()["subscription"]["id"])
    return subs


async def _renewal_orders(si: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await si.get("/api/v1/orders?type=renewal")
    assert r.status_code == 200, r.text
    return [(await si.get(f"/api/v1/orders/{o['id']}")).json() for o in r.json()]


# must-show 1: 30 subscriptions, one order, one invoice mail ------------------------------
@pytest.fixture
async def mailing(
    settings: CloudSettings, smtp_server: SmtpServer
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, httpx.AsyncClient, TestClock, int]]:
    clock = TestClock(ts(2026, 1, 31))
    configured = settings.model_copy(
        update={
            "test_clock": True,
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "smtp_sender": "Entitle billing <billing@entitle.example>",
            "invoice_seller_name": "Entitle Test Seller",
        }
    )
    app = create_app(
        configured, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app), client(app, new_api_key(app)) as admin:
        company = new_company(app, name="Integra", payment_type="invoice")
        uid = new_user(app, role="partner", company_id=company, email=BUYER)
        async with client(app, user_api_key(app, uid)) as si:
            yield app, admin, si, clock, company


async def _drain(app: Any) -> None:
    """Pass the jobs until every queued mail is out (a failed send fails the test)."""
    while True:
        with app.state.cloud.store.transaction() as tx:
            rows = notifications(tx, limit=1000)
        assert not [(r.subject, r.last_error) for r in rows if r.last_error]
        if not [r for r in rows if r.status is NotificationStatus.QUEUED]:
            return
        await app.state.cloud.jobs.run_once()
        await asyncio.sleep(0.01)


async def test_thirty_subscriptions_ending_in_one_month_make_one_order_and_one_invoice_mail(
    mailing: tuple[Any, httpx.AsyncClient, httpx.AsyncClient, TestClock, int],
    smtp_server: SmtpServer,
) -> None:
    app, admin, si, clock, company = mailing
    installations = await _installations(app, admin, company, 15)
    subs = await _buy_all(si, installations)  # invoiced: active at once, all end 1 Feb 2027
    assert len(subs) == 30
    await _drain(app)
    purchase_invoices = len(smtp_server.deliveries)
    assert purchase_invoices == 30  # one per purchase

    days = (ts(2027, 1, 1) - clock()) // DAY  # the charge day, a month before the end
    assert (await admin.post("/api/v1/test-clock/advance", json={"days": days})).is_success
    await _drain(app)

    [order] = await _renewal_orders(si)
    assert order["status"] == "Succeed" and order["pay_with"] == "invoice"
    assert len(order["lines"]) == 30
    assert (
        order["amount_cents"]
        == 15 * (6000 + 3600)
        == sum(line["amount_cents"] for line in order["lines"])
    )
    by_installation: dict[str, list[str]] = {}
    for line in order["lines"]:
        by_installation.setdefault(line["installation_id"], []).append(line["product_code"])
    assert by_installation == {inst: sorted(PRODUCTS) for inst in installations}
    invoices = [
        d
        for d in smtp_server.deliveries[purchase_invoices:]
        if d.message["X-Entitle-Kind"] == "invoice"
    ]
    assert [d.message["Subject"] for d in invoices] == [f"Invoice for order {order['number']}"]
    assert invoices[0].rcpt_tos == (BUYER,)
    for sub_id in subs:  # every line's subscription renewed
        sub = (await si.get(f"{BUY}/{sub_id}")).json()
        assert sub["end"] == ts(2028, 2, 1) and sub["status"] == "active"


# card purchasers: one charge; a decline retries the whole order ---------------------------
async def _card_partner(cloud: Cloud) -> tuple[int, httpx.AsyncClient, int]:
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    return uid, client(cloud.app, user_api_key(cloud.app, uid)), company


async def _renewals(cloud: Cloud) -> None:
    [job] = [j for j in cloud.state.jobs.jobs if j.name == "subscription-renewals"]
    await job.run_once()


def _charges(cloud: Cloud) -> list[tuple[int, str, str, int]]:
    with cloud.state.store.transaction() as tx:
        return [
            (t.order_id, str(t.type), str(t.status), t.amount_cents)
            for t in tx.scalars(select(TransactionRow).order_by(TransactionRow.id))
        ]


async def _card_subs(cloud: Cloud, si: httpx.AsyncClient, company: int, n: int) -> list[str]:
    admin = cloud.http
    installations = await _installations(cloud.app, admin, company, n)
    return await _buy_all(si, installations, card_token=CARD_OK)


async def test_a_card_purchaser_is_charged_once_for_the_month(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    _, si, company = await _card_partner(cloud)
    async with si:
        subs = await _card_subs(cloud, si, company, 3)
        purchases = len(_charges(cloud))
        cloud.clock.now = ts(2027, 1, 1)
        await _renewals(cloud)
        await _renewals(cloud)  # a second pass places nothing again
        [order] = await _renewal_orders(si)
        renewed = [(await si.get(f"{BUY}/{s}")).json()["end"] for s in subs]
    assert order["status"] == "Succeed" and len(order["lines"]) == 6
    assert _charges(cloud)[purchases:] == [(order["id"], "charge", "Succeed", 3 * 9600)]
    assert set(renewed) == {ts(2028, 2, 1)}


async def test_a_declined_renewal_order_is_retried_whole(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    _, si, company = await _card_partner(cloud)
    async with si:
        subs = await _card_subs(cloud, si, company, 2)
        for sub_id in subs:
            r = await si.put(f"{BUY}/{sub_id}/card", json={"card_token": CARD_DECLINED})
            assert r.status_code == 200, r.text
        cloud.clock.now = ts(2027, 1, 1)
        await _renewals(cloud)
        [failed] = await _renewal_orders(si)
        assert failed["status"] == "Failed" and len(failed["lines"]) == 4
        for sub_id in subs:  # a working card before the retry day
            assert (await si.put(f"{BUY}/{sub_id}/card", json={"card_token": CARD_OK})).is_success
        cloud.clock.now = ts(2027, 1, 3)
        await _renewals(cloud)  # not yet: the retry is 3 days after the decline
        assert len(await _renewal_orders(si)) == 1
        cloud.clock.now = ts(2027, 1, 4)
        await _renewals(cloud)
        orders = await _renewal_orders(si)
        ends = {(await si.get(f"{BUY}/{s}")).json()["end"] for s in subs}
    [retry] = [o for o in orders if o["id"] != failed["id"]]
    assert retry["status"] == "Succeed"
    assert sorted(line["installation_id"] for line in retry["lines"]) == sorted(
        line["installation_id"] for line in failed["lines"]
    )
    assert ends == {ts(2028, 2, 1)}
    assert [c for c in _charges(cloud) if c[0] in (failed["id"], retry["id"])] == [
        (failed["id"], "charge", "Failed", 2 * 9600),
        (retry["id"], "charge", "Succeed", 2 * 9600),
    ]


async def test_giving_back_one_line_reverses_only_its_subscription(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    _, si, company = await _card_partner(cloud)
    other_uid, other, _ = await _card_partner(cloud)
    async with si, other:
        subs = await _card_subs(cloud, si, company, 2)
        cloud.clock.now = ts(2027, 1, 1)
        await _renewals(cloud)
        [order] = await _renewal_orders(si)
        line = order["lines"][1]
        path = f"/api/v1/orders/{order['id']}/lines/{line['id']}/refund"
        # not settled yet: refused, nothing moves, the line stays
        early = await cloud.http.post(path)
        assert early.status_code == 409, early.text
        before = _charges(cloud)
        cloud.clock.advance(2 * DAY)  # settled
        # bad requests: another order's line, no such line, a partner (no refund right)
        unknown = f"/api/v1/orders/{order['id']}/lines/999999/refund"
        assert (await cloud.http.post(unknown)).status_code == 404
        assert (await other.post(path)).status_code in (403, 404)
        assert (await si.post(path)).status_code == 403
        assert _charges(cloud) == before
        done = await cloud.http.post(path)
        assert done.status_code == 200, done.text
        assert done.json()["refund"]["amount_cents"] == line["amount_cents"]
        again = await cloud.http.post(path)
        assert again.status_code == 409 and "given back already" in again.text
        after = (await si.get(f"/api/v1/orders/{order['id']}")).json()
        views = {s: (await si.get(f"{BUY}/{s}")).json() for s in subs}
    assert after["status"] == "Succeed"
    [reversed_line] = [x for x in after["lines"] if x["reversed_at"] is not None]
    assert reversed_line["id"] == line["id"]
    refunds = [c for c in _charges(cloud) if c[0] == order["id"] and c[1] == "refund"]
    assert refunds == [(order["id"], "refund", "Succeed", line["amount_cents"])]
    with cloud.state.store.transaction() as tx:
        link = tx.scalars(
            select(SubscriptionOrderRow).where(SubscriptionOrderRow.line_id == line["id"])
        ).one()
        assert tx.get(OrderRow, order["id"]).amount_cents == 2 * 9600  # the order is unchanged
    back = views.pop(link.subscription_id)
    assert back["end"] == ts(2027, 2, 1) and back["auto_renew"] is False
    assert {v["end"] for v in views.values()} == {ts(2028, 2, 1)}
    assert other_uid
