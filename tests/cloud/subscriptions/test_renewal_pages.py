"""The dashboard side of consolidated renewals and the order actions (SQLite and PostgreSQL):
a renewal order lists its lines per installation and billing staff give one back with a
CSRF-checked form; billing staff bill a cycle now from the installation page; a purchaser's
credit page shows the balance and staff grant credit (bad input: 422, nothing stored)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from cloud.billing.payments import CARD_OK
from cloud.billing.tables import CreditRow
from cloud.devices import memberships
from tests.cloud.harness import DAY, Cloud, client, every_row, new_company, new_user, user_api_key
from tests.cloud.pages import csrf_of, line_rows, signed_in

BUY = "/api/v1/subscriptions"


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


async def _shop(cloud: Cloud, n: int) -> tuple[int, list[str], list[str]]:
    """A card purchaser with Remote Services on ``n`` installations, bought 31 Jan 2026."""
    cloud.clock.now = ts(2026, 1, 31)
    company = new_company(cloud.app, name="Cardco", payment_type="card")
    uid = new_user(cloud.app, role="partner", company_id=company)
    insts, subs = [], []
    async with client(cloud.app, user_api_key(cloud.app, uid)) as si:
        for i in range(n):
            insts.append(await cloud.connected(f"Shop {i}"))
            with cloud.state.store.transaction() as tx:
                memberships.add_integrator(tx, insts[-1], company, actor="tests", now=0)
            r = await si.post(
                BUY,
                json={"installation_id": insts[-1], "product": "TSF16100", "card_token": CARD_OK},
            )
            assert r.status_code == 201, r.text
            subs.append(r.json()["subscription"]["id"])
    return uid, insts, subs


async def _renewals(cloud: Cloud) -> None:
    [job] = [j for j in cloud.state.jobs.jobs if j.name == "subscription-renewals"]
    await job.run_once()


async def test_a_renewal_order_page_lists_lines_per_installation_and_gives_one_back(
    cloud: Cloud,
) -> None:
    _, insts, subs = await _shop(cloud, 2)
    cloud.clock.now = ts(2027, 1, 1)
    await _renewals(cloud)
    [order] = (await cloud.http.get("/api/v1/orders?type=renewal")).json()
    cloud.clock.advance(2 * DAY)
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        page = await http.get(f"/orders/{order['id']}")
        assert page.status_code == 200
        rows = line_rows(page.text)  # one table: a row per line, its installation, its amount
        assert len(rows) == 2 and "Lines per installation" not in page.text
        # the lines come in the order's line order (by installation id, which is random):
        # each installation has exactly one row, naming it, with its amount
        for name, inst in zip(("Shop 0", "Shop 1"), insts, strict=True):
            [row] = [r for r in rows if inst in r]
            assert name in row and "€60.00" in row, row
        lines = (await cloud.http.get(f"/api/v1/orders/{order['id']}")).json()["lines"]
        action = f"/orders/{order['id']}/lines/{lines[0]['id']}/refund"
        assert page.text.count("Give back this line") == 2 and action in page.text
        rows = every_row(cloud.app)
        forged = await http.post(action, data={"csrf_token": "forged"})
        assert forged.status_code in (400, 403) and every_row(cloud.app) == rows
        done = await http.post(action, data={"csrf_token": csrf_of(page.text)})
        assert done.status_code == 303, done.text[:300]
        after = await http.get(done.headers["location"])
        assert "is given back: €60.00" in after.text
        assert after.text.count("Give back this line") == 1
    ends = [(await cloud.http.get(f"{BUY}/{s}")).json()["end"] for s in subs]
    assert sorted(ends) == [ts(2027, 2, 1), ts(2028, 2, 1)]


async def test_billing_staff_bill_a_cycle_now_from_the_installation_page(cloud: Cloud) -> None:
    _, insts, subs = await _shop(cloud, 1)
    cloud.clock.now = ts(2026, 6, 1)
    async with signed_in(cloud.app, role="admin") as (http, _):
        page = await http.get(f"/installations/{insts[0]}")
        assert page.status_code == 200 and "Bill this cycle now" in page.text
        done = await http.post(
            f"/subscriptions/{subs[0]}/bill-now", data={"csrf_token": csrf_of(page.text)}
        )
        assert done.status_code == 303
        after = await http.get(done.headers["location"])
        assert "this cycle is billed now and paid" in after.text
        again = await http.post(
            f"/subscriptions/{subs[0]}/bill-now", data={"csrf_token": csrf_of(page.text)}
        )
        assert again.status_code == 303
        refused = await http.get(again.headers["location"])
        assert "paid through 2028-02-01" in refused.text
    async with signed_in(cloud.app, role="owner") as (http, _):  # not billing staff
        rows = every_row(cloud.app)
        refused = await http.post(f"/subscriptions/{subs[0]}/bill-now", data={"csrf_token": "x"})
        assert refused.status_code in (403, 404) and every_row(cloud.app) == rows
    assert (await cloud.http.get(f"{BUY}/{subs[0]}")).json()["end"] == ts(2028, 2, 1)


async def test_the_credit_page_shows_the_balance_and_staff_grant_credit(cloud: Cloud) -> None:
    uid, _, _ = await _shop(cloud, 1)
    path = f"/customers/{uid}/credit"
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        page = await http.get(path)
        assert page.status_code == 200 and "Grant credit" in page.text
        rows = every_row(cloud.app)
        bad = await http.post(
            path, data={"csrf_token": csrf_of(page.text), "amount": "-3", "reason": "x"}
        )
        assert bad.status_code == 422 and "Enter an amount like 25.00." in bad.text
        no_reason = await http.post(
            path, data={"csrf_token": csrf_of(page.text), "amount": "5", "reason": " "}
        )
        assert no_reason.status_code == 422
        assert every_row(cloud.app) == rows
        done = await http.post(
            path, data={"csrf_token": csrf_of(page.text), "amount": "25.00", "reason": "outage"}
        )
        assert done.status_code == 303
        shown = await http.get(done.headers["location"])
        assert "the balance is €25.00" in shown.text and "outage" in shown.text
    async with signed_in(cloud.app, role="owner") as (http, _):
        assert (await http.get(path)).status_code == 404  # another customer's credit
    with cloud.state.store.transaction() as tx:
        [entry] = tx.scalars(select(CreditRow).where(CreditRow.user_id == uid)).all()
        assert (entry.amount_cents, entry.entry, entry.reason) == (2500, "grant", "outage")


async def test_billing_staff_move_the_billing_date_from_the_installation_page(
    cloud: Cloud,
) -> None:
    _, insts, subs = await _shop(cloud, 1)
    cloud.clock.now = ts(2026, 6, 1)
    action = f"/subscriptions/{subs[0]}/billing-date"
    async with signed_in(cloud.app, role="admin") as (http, _):
        page = await http.get(f"/installations/{insts[0]}")
        assert action in page.text
        token = csrf_of(page.text)
        rows = every_row(cloud.app)
        for bad in ("2026-12-15", "soon"):
            refused = await http.post(action, data={"csrf_token": token, "renews_on": bad})
            assert refused.status_code == 303
            shown = await http.get(refused.headers["location"])
            assert "first day of a month" in shown.text or "YYYY-MM-DD" in shown.text
        assert every_row(cloud.app) == rows
        done = await http.post(action, data={"csrf_token": token, "renews_on": "2026-12-01"})
        assert done.status_code == 303
        shown = await http.get(done.headers["location"])
        assert "renews 2 months earlier; 10.00 was credited" in shown.text
    assert (await cloud.http.get(f"{BUY}/{subs[0]}")).json()["end"] == ts(2026, 12, 1)
