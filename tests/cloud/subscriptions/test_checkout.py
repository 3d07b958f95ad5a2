"""Buy for several installations in one checkout (TTecomm), through the API on SQLite and
PostgreSQL: one order with a line per installation, one payment, every subscription active;
a refusal for any one installation refuses the whole checkout before any money moves and
names it; a declined card buys nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select

from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.billing.tables import OrderRow, TransactionRow
from cloud.devices import memberships
from cloud.subscriptions.tables import SubscriptionRow
from tests.cloud.harness import Cloud, client, every_row, new_company, new_user, user_api_key
from tests.cloud.pages import csrf_of, line_rows, signed_in

CHECKOUT = "/api/v1/subscriptions/checkout"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


async def _setup(cloud: Cloud, n: int) -> tuple[object, list[str], str]:
    cloud.clock.now = ts(2026, 3, 10)
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    insts = []
    for i in range(n):
        insts.append(await cloud.connected(f"Shop {i}"))
        with cloud.state.store.transaction() as tx:
            memberships.add_integrator(tx, insts[-1], company, actor="tests", now=0)
    foreign = await cloud.connected("Not theirs")
    return client(cloud.app, user_api_key(cloud.app, uid)), insts, foreign


def _counts(cloud: Cloud) -> tuple[int, int, int]:
    with cloud.state.store.transaction() as tx:
        return (
            len(tx.scalars(select(OrderRow)).all()),
            len(tx.scalars(select(TransactionRow)).all()),
            len(tx.scalars(select(SubscriptionRow)).all()),
        )


async def test_one_checkout_buys_for_several_installations_in_one_order(cloud: Cloud) -> None:
    si, insts, _ = await _setup(cloud, 3)
    items = [{"installation_id": i, "product": "TSF16100"} for i in insts]
    items.append({"installation_id": insts[0], "product": "TSF12125"})
    async with si:
        r = await si.post(CHECKOUT, json={"items": items, "card_token": CARD_OK})
        assert r.status_code == 201, r.text
        body = r.json()
        order = (await si.get(f"/api/v1/orders/{body['order_id']}")).json()
    assert body["order_status"] == "Succeed" and body["due_now_cents"] == 3 * 6000 + 3600
    assert [s["status"] for s in body["subscriptions"]] == ["active"] * 4
    assert {s["end"] for s in body["subscriptions"]} == {ts(2027, 4, 1)}
    assert [line["installation_id"] for line in order["lines"]] == [*insts, insts[0]]
    with cloud.state.store.transaction() as tx:
        charges = tx.scalars(
            select(TransactionRow).where(TransactionRow.order_id == body["order_id"])
        ).all()
    assert [(t.type, t.status, t.amount_cents) for t in charges] == [("charge", "Succeed", 21600)]


async def test_a_refusal_for_one_installation_refuses_the_whole_checkout(cloud: Cloud) -> None:
    si, insts, foreign = await _setup(cloud, 2)
    ok = [{"installation_id": i, "product": "TSF16100"} for i in insts]
    async with si:
        before, rows = _counts(cloud), every_row(cloud.app)
        cases = [
            ([*ok, {"installation_id": insts[1], "product": "NOPE"}], 422, insts[1]),
            ([*ok, {"installation_id": insts[0], "product": "TSF16100"}], 422, insts[0]),
            ([*ok, {"installation_id": foreign, "product": "TSF16100"}], 404, foreign),
            ([{**ok[0], "term_months": 7}, ok[1]], 422, insts[0]),
        ]
        for items, status, named in cases:
            r = await si.post(CHECKOUT, json={"items": items, "card_token": CARD_OK})
            assert r.status_code == status, r.text
            assert named in r.text and "nothing was bought" in r.text, r.text
        assert (await si.post(CHECKOUT, json={"items": []})).status_code == 422
        assert _counts(cloud) == before and every_row(cloud.app) == rows  # no money, no rows
        # one installation has the service already: the checkout naming it is refused
        first = await si.post(CHECKOUT, json={"items": [ok[1]], "card_token": CARD_OK})
        assert first.status_code == 201, first.text
        middle = _counts(cloud)
        again = await si.post(CHECKOUT, json={"items": ok, "card_token": CARD_OK})
        assert again.status_code == 409 and insts[1] in again.text
        assert _counts(cloud) == middle


async def test_a_declined_checkout_buys_nothing(cloud: Cloud) -> None:
    si, insts, _ = await _setup(cloud, 2)
    items = [{"installation_id": i, "product": "TSF16100"} for i in insts]
    async with si:
        r = await si.post(CHECKOUT, json={"items": items, "card_token": CARD_DECLINED})
        assert r.status_code == 402, r.text
        for inst in insts:
            listed = await si.get(f"/api/v1/subscriptions?installation_id={inst}")
            assert listed.json() == []
        retry = await si.post(CHECKOUT, json={"items": items, "card_token": CARD_OK})
        assert retry.status_code == 201 and retry.json()["order_status"] == "Succeed"


async def test_the_checkout_page_buys_for_several_installations(cloud: Cloud) -> None:
    cloud.clock.now = ts(2026, 3, 10)
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    insts = []
    for i in range(2):
        insts.append(await cloud.connected(f"Shop {i}"))
        with cloud.state.store.transaction() as tx:
            memberships.add_integrator(tx, insts[-1], company, actor="tests", now=0)
    silent = await cloud.installation("Silent shop")  # nothing reported: nothing to buy
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, silent, company, actor="tests", now=0)
    async with signed_in(cloud.app, role="partner", company_id=company) as (http, _):
        page = await http.get("/checkout")
        assert page.status_code == 200 and all(i in page.text for i in insts)
        # the silent one is marked and its boxes are off; the others' are on
        assert f'id="not-connected-{silent}"' in page.text and "in the last 7 days" in page.text
        boxes = re.findall(r'<input type="checkbox"[^>]*id="item-([^"]+)-TSF\d+"[^>]*>', page.text)
        assert sorted(set(boxes)) == sorted([*insts, silent])
        for inst in (*insts, silent):
            box = re.search(
                rf'<input type="checkbox"[^>]*id="item-{inst}-TSF16100"[^>]*>', page.text
            )
            assert box is not None and ("disabled" in box.group(0)) == (inst == silent)
        token = csrf_of(page.text)
        rows = every_row(cloud.app)
        forced = await http.post(  # a forged post with the silent one: refused whole
            "/checkout",
            data={
                "csrf_token": token,
                "item": [f"{insts[0]}|TSF16100", f"{silent}|TSF16100"],
                "card_number": CARD_OK,
            },
        )
        assert forced.status_code == 409 and f"installation {silent} is not connected" in (
            forced.text
        )
        wanted = [f"{insts[0]}|TSF16100", f"{insts[1]}|TSF16100", f"{insts[1]}|TSF12125"]
        no_card = await http.post("/checkout", data={"csrf_token": token, "item": wanted})
        assert no_card.status_code == 422 and "card number" in no_card.text
        forged = await http.post(
            "/checkout",
            data={
                "csrf_token": token,
                "item": [*wanted, "inst_nothere|TSF16100"],
                "card_number": CARD_OK,
            },
        )
        assert forged.status_code == 404 and "inst_nothere" in forged.text
        assert every_row(cloud.app) == rows  # refused: nothing stored, no money moved
        done = await http.post(
            "/checkout", data={"csrf_token": token, "item": wanted, "card_number": CARD_OK}
        )
        assert done.status_code == 303, done.text[:300]
        order = await http.get(done.headers["location"])
        assert "Bought 3 services in one order." in order.text
        # one table, one row per line, each naming its installation and its amount
        rows = line_rows(order.text)
        assert len(rows) == 3 and "Lines per installation" not in order.text
        expected = [("Shop 0", "TSF16100", "€60.00"), ("Shop 1", "TSF16100", "€60.00")]
        expected.append(("Shop 1", "TSF12125", "€36.00"))
        for row, (name, code, amount) in zip(rows, expected, strict=True):
            assert name in row and code in row and row.endswith(amount), row
            assert f"1 × {amount}" in row, row


async def test_nothing_is_sold_to_an_installation_that_is_not_connected(cloud: Cloud) -> None:
    """TTecomm: a service is bought only for a connected installation, whichever way it is
    bought; the refusal names the installation and says what to do, and nothing is
    written."""
    si, insts, _ = await _setup(cloud, 1)
    silent = await cloud.installation("Silent")  # a camera, registered, never reported
    cam = (await cloud.device(silent, "camera"))["device_id"]
    stale = await cloud.installation("Stale")  # reported once, longer ago than the window
    gw = (await cloud.device(stale))["device_id"]
    cloud.report(gw)
    cloud.clock.advance(cloud.state.settings.purchase_connected_window_s + 1)
    cloud.report((await cloud.device(insts[0]))["device_id"])  # still connected
    company = new_company(cloud.app, name="Cardco 2", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    with cloud.state.store.transaction() as tx:
        for inst in (insts[0], silent, stale):
            memberships.add_integrator(tx, inst, company, actor="tests", now=0)
    attempts = [
        (
            CHECKOUT,
            {
                "items": [
                    {"installation_id": insts[0], "product": "TSF16100"},
                    {"installation_id": stale, "product": "TSF16100"},
                ]
            },
            stale,
        ),
        ("/api/v1/subscriptions", {"installation_id": silent, "product": "TSF12125"}, silent),
        (
            "/api/v1/subscriptions",
            {"installation_id": silent, "product": "VR-4K-30D", "device_id": cam},
            silent,
        ),
        (
            "/api/v1/subscriptions/cameras",
            {"installation_id": silent, "product": "VR-4K-30D"},
            silent,
        ),
        (
            "/api/v1/subscriptions/users",
            {"installation_id": stale, "user_refs": ["Hr", "Desk"]},
            stale,
        ),
    ]
    async with client(cloud.app, user_api_key(cloud.app, uid)) as other:
        before, rows = _counts(cloud), every_row(cloud.app)
        for path, body, named in attempts:
            r = await other.post(path, json={**body, "card_token": CARD_OK})
            assert r.status_code == 409, (path, r.text)
            detail = r.json()["detail"]
            assert f"installation {named} is not connected" in detail, detail
            assert "wait for its report" in detail, detail
        assert _counts(cloud) == before and every_row(cloud.app) == rows  # no money, no rows
        # the one that reported in time buys
        r = await other.post(
            CHECKOUT,
            json={
                "items": [{"installation_id": insts[0], "product": "TSF16100"}],
                "card_token": CARD_OK,
            },
        )
        assert r.status_code == 201, r.text
