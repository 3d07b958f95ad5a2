"""Order action pages without a browser: a customer hides and unhides an order, staff see it
marked and resend its mails, lines show quantity × unit price, orders of one customer."""

from __future__ import annotations

import re

import pytest

from cloud.billing.orders import Billing, OrderLine
from cloud.billing.payments import CARD_OK
from cloud.devices import memberships
from cloud.notifications.queries import notifications
from tests.cloud.conftest import Cloud
from tests.cloud.harness import every_row, new_user
from tests.cloud.pages import csrf_of, line_rows, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)

LINES = (OrderLine("TSF12125", "Voice Control, 12 months", 12, 7_200, 2, 3_600),)


def _numbers(html: str) -> list[str]:
    return re.findall(r">(EN-\d{4}-\d{6})</a>", html)


async def _order(cloud: Cloud, inst: str, key: str, buyer: int) -> int:
    billing: Billing | None = cloud.state.billing
    assert billing is not None
    result = await billing.place_order(
        kind="purchase",
        buyer=buyer,
        installation_id=inst,
        lines=LINES,
        pay_with="card",
        card_token=CARD_OK,
        idempotency_key=key,
        now=cloud.clock(),
    )
    return result.order_id


async def test_a_customer_hides_an_order_from_their_history_and_shows_it_again(
    cloud: Cloud,
) -> None:
    inst = await cloud.installation("Villa")
    async with signed_in(cloud.app, role="owner", email="anna@villa.example") as (http, anna):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, inst, anna, actor="system:tests", now=cloud.clock())
        kept, hidden = await _order(cloud, inst, "k1", anna), await _order(cloud, inst, "k2", anna)
        page = await http.get(f"/orders/{hidden}")
        assert "Hide from my order history" in page.text
        assert ">Quantity × unit price<" in page.text  # one lines table: quantity × unit, amount
        [row] = line_rows(page.text)
        assert "TSF12125" in row and "2 × €36.00" in row and row.endswith("€72.00"), row
        done = await http.post(f"/orders/{hidden}/hide", data={"csrf_token": csrf_of(page.text)})
        assert done.status_code == 303
        after = await http.get(done.headers["location"])
        assert "is hidden from your order history" in after.text
        assert "Show in my order history again" in after.text
        assert _numbers((await http.get("/orders")).text) == [f"EN-2026-{kept:06d}"]
        only_hidden = await http.get("/orders", params={"hidden": "1"})
        assert _numbers(only_hidden.text) == [f"EN-2026-{hidden:06d}"]
    async with signed_in(cloud.app, role="support") as (staff, _):
        listed = await staff.get("/orders")
        assert len(_numbers(listed.text)) == 2 and "hidden by the customer" in listed.text
        order = await staff.get(f"/orders/{hidden}")
        assert "Hidden from the customer" in order.text
        assert "Hide from my order history" not in order.text
    async with signed_in(cloud.app, role="owner") as (stranger, _):
        token = csrf_of((await stranger.get("/orders")).text)
        rows = every_row(cloud.app)
        forged = await stranger.post(f"/orders/{kept}/hide", data={"csrf_token": token})
        assert forged.status_code == 404  # another customer's order
        assert every_row(cloud.app) == rows


async def test_support_resends_the_invoice_from_the_order_page(cloud: Cloud) -> None:
    inst = await cloud.installation("Villa")
    async with signed_in(cloud.app, role="owner", email="anna@villa.example") as (owner, anna):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, inst, anna, actor="system:tests", now=cloud.clock())
        order = await _order(cloud, inst, "k1", anna)
        page = await owner.get(f"/orders/{order}")
        assert "Resend the invoice" not in page.text
        rows = every_row(cloud.app)
        forged = await owner.post(
            f"/orders/{order}/resend", data={"csrf_token": csrf_of(page.text), "mail": "invoice"}
        )
        assert forged.status_code == 403 and every_row(cloud.app) == rows
    async with signed_in(cloud.app, role="support") as (staff, _):
        page = await staff.get(f"/orders/{order}")
        assert "Resend the invoice" in page.text and "Resend the refund mail" not in page.text
        token = csrf_of(page.text)
        done = await staff.post(
            f"/orders/{order}/resend", data={"csrf_token": token, "mail": "invoice"}
        )
        assert done.status_code == 303
        assert (
            "queued again to anna@villa.example" in (await staff.get(done.headers["location"])).text
        )
        bad = await staff.post(f"/orders/{order}/resend", data={"csrf_token": token, "mail": "x"})
        assert bad.status_code == 422
    with cloud.state.store.transaction() as tx:
        keys = sorted(n.dedupe_key or "" for n in notifications(tx, limit=10))
    assert keys == [f"invoice:{order}", f"invoice:{order}:resend:1"]


async def test_orders_of_one_customer(cloud: Cloud) -> None:
    villa, bakery = await cloud.installation("Villa"), await cloud.installation("Bakery")
    anna = new_user(cloud.app, role="owner", email="anna@villa.example")
    bram = new_user(cloud.app, role="owner", email="bram@bakery.example")
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, villa, anna, actor="system:tests", now=cloud.clock())
        memberships.set_owner(tx, bakery, bram, actor="system:tests", now=cloud.clock())
    annas, brams = await _order(cloud, villa, "k1", anna), await _order(cloud, bakery, "k2", bram)
    async with signed_in(cloud.app, role="support") as (staff, _):
        profile = await staff.get(f"/customers/users/{anna}")
        assert f'href="/orders?user={anna}"' in profile.text
        page = await staff.get("/orders", params={"user": anna})
        assert _numbers(page.text) == [f"EN-2026-{annas:06d}"]
        assert "Orders of this customer only" in page.text
        page = await staff.get("/orders", params={"user": bram})
        assert _numbers(page.text) == [f"EN-2026-{brams:06d}"]
        assert (await staff.get("/orders", params={"user": "0"})).status_code == 422
