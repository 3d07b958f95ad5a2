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
from cloud.errors import InvalidRequest, InvalidTransition
from cloud.subscriptions.rules.catalogue import CATALOGUE
from cloud.subscriptions.rules.lifecycle import Status, Subscription
from cloud.subscriptions.rules.renewals import billing_date_change, force_bill
from tests.cloud.harness import DAY, Cloud, client, new_company, new_user, user_api_key

BUY = "/api/v1/subscriptions"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


async def _partner(cloud: Cloud) -> tuple[httpx.AsyncClient, str]:
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    inst = await cloud.connected()
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


# credit --------------------------------------------------------------------------------
async def test_credit_pays_renewals_before_the_card_and_comes_back_when_given_back(
    cloud: Cloud,
) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    other = new_user(cloud.app, role="partner", company_id=company)
    insts = []
    async with (
        client(cloud.app, user_api_key(cloud.app, uid)) as si,
        client(cloud.app, user_api_key(cloud.app, other)) as them,
    ):
        for i in range(2):
            insts.append(await cloud.connected(f"Shop {i}"))
            with cloud.state.store.transaction() as tx:
                memberships.add_integrator(tx, insts[-1], company, actor="tests", now=0)
            r = await si.post(
                BUY,
                json={"installation_id": insts[-1], "product": "TSF16100", "card_token": CARD_OK},
            )
            assert r.status_code == 201, r.text
        path = f"/api/v1/customers/{uid}/credit"
        # bad grants: refused, typed, nothing stored
        for bad in ({"amount_cents": 0, "reason": "x"}, {"amount_cents": 5, "reason": ""}):
            assert (await cloud.http.post(path, json=bad)).status_code == 422
        assert (await si.post(path, json={"amount_cents": 5, "reason": "me"})).status_code == 403
        assert (
            await cloud.http.post(
                "/api/v1/customers/999999/credit", json={"amount_cents": 5, "reason": "x"}
            )
        ).status_code == 404
        assert (await si.get(path)).json()["balance_cents"] == 0
        granted = await cloud.http.post(path, json={"amount_cents": 9000, "reason": "outage"})
        assert granted.status_code == 200 and granted.json()["balance_cents"] == 9000
        assert (await them.get(path)).status_code == 404  # another customer's credit
        purchases = _charges(cloud)
        cloud.clock.now = ts(2027, 1, 1)
        await _renewals(cloud)
        [order] = [
            (await si.get(f"/api/v1/orders/{o['id']}")).json()
            for o in (await si.get("/api/v1/orders?type=renewal")).json()
        ]
        mine = (await si.get(path)).json()
        # 2 x 60.00 = 120.00: 90.00 from credit, 30.00 charged
        assert order["amount_cents"] == 3000 and order["status"] == "Succeed"
        assert [(x["product_code"], x["amount_cents"]) for x in order["lines"]][-1] == (
            "CREDIT",
            -9000,
        )
        assert mine["balance_cents"] == 0 and mine["entries"][0]["entry"] == "use"
        assert [c[1:] for c in _charges(cloud)[len(purchases) :]] == [("charge", "Succeed", 3000)]
        # give back one 60.00 line after settlement: 30.00 to the card, 30.00 back as credit
        cloud.clock.advance(2 * DAY)
        line = order["lines"][0]
        back = await cloud.http.post(f"/api/v1/orders/{order['id']}/lines/{line['id']}/refund")
        assert back.status_code == 200, back.text
        assert back.json()["refund"]["amount_cents"] == 3000
        assert back.json()["credited_cents"] == 3000
        credit_line = order["lines"][-1]
        no = await cloud.http.post(f"/api/v1/orders/{order['id']}/lines/{credit_line['id']}/refund")
        assert no.status_code == 409
        assert (await si.get(path)).json()["balance_cents"] == 3000
        # the other line: the charge is used up, so all of it comes back as credit
        last = order["lines"][1]
        rest = await cloud.http.post(f"/api/v1/orders/{order['id']}/lines/{last['id']}/refund")
        assert rest.status_code == 200 and rest.json()["credited_cents"] == 6000, rest.text
        assert (await si.get(path)).json()["balance_cents"] == 9000  # all of the credit is back


# billing date ------------------------------------------------------------------------------
def _active(end: int) -> Subscription:
    return Subscription(
        id="sub_1",
        installation_id="inst_1",
        product=CATALOGUE["TSF16100"],
        purchaser=7,
        status=Status.ACTIVE,
        term_months=12,
        start=ts(2026, 1, 31),
        end=end,
    )


def test_the_shifted_period_costs_one_month_price_a_month() -> None:
    monthly = CATALOGUE["TSF16100"].monthly_cents
    later = billing_date_change(_active(ts(2027, 2, 1)), new_end=ts(2027, 5, 1), now=ts(2026, 6, 1))
    assert (later.months, later.amount_cents, later.earlier) == (3, 3 * monthly, None)
    earlier = billing_date_change(
        _active(ts(2027, 2, 1)), new_end=ts(2026, 11, 1), now=ts(2026, 6, 1)
    )
    assert (earlier.months, earlier.amount_cents) == (-3, 3 * monthly)
    assert earlier.earlier is not None and earlier.earlier.state.end == ts(2026, 11, 1)
    assert earlier.earlier.effects[0].until == ts(2026, 11, 1)  # the devices follow
    across_years = billing_date_change(
        _active(ts(2027, 2, 1)), new_end=ts(2028, 1, 1), now=ts(2026, 6, 1)
    )
    assert across_years.months == 11
    for bad_end in (ts(2027, 2, 2), ts(2027, 2, 1), ts(2026, 7, 1), ts(2026, 6, 1), ts(2030, 1, 1)):
        try:
            billing_date_change(_active(ts(2027, 2, 1)), new_end=bad_end, now=ts(2026, 6, 15))
        except InvalidRequest:
            continue
        raise AssertionError(f"accepted {bad_end}")


async def test_moving_the_billing_date_charges_or_credits_the_shifted_months(
    cloud: Cloud,
) -> None:
    cloud.clock.now = ts(2026, 1, 31)
    si, inst = await _partner(cloud)
    async with si:
        subs = []
        for code in ("TSF16100", "TSF12125"):
            r = await si.post(
                BUY, json={"installation_id": inst, "product": code, "card_token": CARD_OK}
            )
            subs.append(r.json()["subscription"]["id"])
        remote, voice = subs
        uid = (await si.get(f"{BUY}/{remote}")).json()["purchaser_id"]
        cloud.clock.now = ts(2026, 6, 10)
        before = _charges(cloud)
        for bad in ("2027-02-15", "2027-02-01", "2026-06-01", "not a day"):
            r = await cloud.http.post(f"{BUY}/{remote}/billing-date", json={"renews_on": bad})
            assert r.status_code == 422, (bad, r.text)
        assert (
            await si.post(f"{BUY}/{remote}/billing-date", json={"renews_on": "2027-05-01"})
        ).status_code == 403
        assert _charges(cloud) == before  # refusals moved no money
        later = await cloud.http.post(
            f"{BUY}/{remote}/billing-date", json={"renews_on": "2027-05-01"}
        )
        assert later.status_code == 200, later.text
        body = later.json()
        assert (body["months"], body["charged_cents"], body["credited_cents"]) == (3, 1500, 0)
        assert body["order_status"] == "Succeed" and body["subscription"]["end"] == ts(2027, 5, 1)
        earlier = await cloud.http.post(
            f"{BUY}/{voice}/billing-date", json={"renews_on": "2026-12-01"}
        )
        assert earlier.status_code == 200, earlier.text
        moved = earlier.json()
        assert (moved["months"], moved["charged_cents"]) == (-2, 0)
        assert moved["credited_cents"] == 2 * CATALOGUE["TSF12125"].monthly_cents
        assert moved["subscription"]["end"] == ts(2026, 12, 1)
        credit = (await si.get(f"/api/v1/customers/{uid}/credit")).json()
    assert credit["balance_cents"] == moved["credited_cents"]
    assert [c[1:] for c in _charges(cloud)[len(before) :]] == [("charge", "Succeed", 1500)]
