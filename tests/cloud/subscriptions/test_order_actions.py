"""Order actions of billing staff (the CRM manual), through the API on SQLite and PostgreSQL:
force-bill charges the current cycle now, never twice for one cycle, and the renewal job
does not charge it again; refusals are typed and move no money."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import TransactionRow
from cloud.devices import memberships
from cloud.errors import InvalidTransition
from cloud.subscriptions.rules.catalogue import CATALOGUE
from cloud.subscriptions.rules.lifecycle import Status, Subscription
from cloud.subscriptions.rules.renewals import force_bill
from tests.cloud.harness import Cloud, client, new_company, new_user, user_api_key

BUY = "/api/v1/subscriptions"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


async def _partner(cloud: Cloud) -> tuple[httpx.AsyncClient, str]:
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    inst = await cloud.installation()
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, inst, company, actor="tests", now=cloud.clock())
    return client(cloud.app, user_api_key(cloud.app, uid)), inst


def _charges(cloud: Cloud) -> list[tuple[int, str, str, int]]:
    with cloud.state.store.transaction() as tx:
        return [
            (t.order_id, str(t.type), str(t.status), t.amount_cents)
            for t in tx.scalars(select(TransactionRow).order_by(TransactionRow.id))
        ]


async def _renewals(cloud: Cloud) -> None:
    [job] = [j for j in cloud.state.jobs.jobs if j.name == "subscription-renewals"]
    await job.run_once()


async def test_force_bill_charges_the_cycle_once_and_the_job_does_not_again(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    si, inst = await _partner(cloud)
    async with si:
        subs = []
        for code in ("TSF16100", "TSF12125"):
            r = await si.post(
                BUY, json={"installation_id": inst, "product": code, "card_token": CARD_OK}
            )
            assert r.status_code == 201, r.text
            subs.append(r.json()["subscription"]["id"])
        remote, voice = subs
        path = f"{BUY}/{remote}/bill-now"
        # just bought: this cycle is paid a term ahead already
        early = await cloud.http.post(path)
        assert early.status_code == 409 and "paid through" in early.text
        cloud.clock.now = ts(2026, 6, 1)
        purchases = _charges(cloud)
        assert (await si.post(path)).status_code == 403  # a partner may not
        unknown = await cloud.http.post(f"{BUY}/sub_0000000000000000/bill-now")
        assert unknown.status_code == 404
        assert _charges(cloud) == purchases  # refusals moved no money
        done = await cloud.http.post(path)
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["order_status"] == "Succeed" and body["amount_cents"] == 6000
        assert body["subscription"]["end"] == ts(2028, 2, 1)
        again = await cloud.http.post(path)  # never twice for one cycle
        assert again.status_code == 409 and "2028-02-01" in again.text
        cloud.clock.now = ts(2027, 1, 1)  # the charge day: only the other one is charged
        await _renewals(cloud)
        ends = {s: (await si.get(f"{BUY}/{s}")).json()["end"] for s in subs}
        order = (await si.get(f"/api/v1/orders/{body['order_id']}")).json()
    assert order["type"] == "renewal" and [line["installation_id"] for line in order["lines"]] == [
        inst
    ]
    charges = _charges(cloud)[len(purchases) :]
    assert [c[1:] for c in charges] == [("charge", "Succeed", 6000), ("charge", "Succeed", 3600)]
    assert ends == {remote: ts(2028, 2, 1), voice: ts(2028, 2, 1)}


async def test_a_declined_forced_charge_is_a_decline_of_the_cycle(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    si, inst = await _partner(cloud)
    async with si:
        r = await si.post(
            BUY, json={"installation_id": inst, "product": "TSF16100", "card_token": CARD_OK}
        )
        sub = r.json()["subscription"]["id"]
        assert (await si.put(f"{BUY}/{sub}/card", json={"card_token": CARD_DECLINED})).is_success
        cloud.clock.now = ts(2026, 12, 20)
        done = await cloud.http.post(f"{BUY}/{sub}/bill-now")
        assert done.status_code == 200 and done.json()["order_status"] == "Failed", done.text
        after = (await si.get(f"{BUY}/{sub}")).json()
    assert after["end"] == ts(2027, 2, 1) and after["status"] == "active"


def test_force_bill_rule_never_bills_a_cycle_twice() -> None:
    sub = Subscription(
        id="sub_1",
        installation_id="inst_1",
        product=CATALOGUE["TSF16100"],
        purchaser=7,
        status=Status.ACTIVE,
        term_months=12,
        start=ts(2026, 1, 31),
        end=ts(2027, 2, 1),
    )
    t = force_bill(sub, now=ts(2026, 6, 1))
    [charge] = t.effects
    assert charge.idempotency_key == "renewal:sub_1:" + str(ts(2027, 2, 1)) + ":0:0"
    assert t.state.charging == 0 and t.due_now_cents == 6000
    for state in (t.state, sub):
        try:
            force_bill(state, now=ts(2026, 1, 31) if state is sub else ts(2026, 6, 1))
        except InvalidTransition:
            continue
        raise AssertionError("billed twice")
