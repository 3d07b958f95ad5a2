"""Orders and payments pages without a browser: the searchable history, an order, its
invoice, void and refund behind confirm steps, scoping, and no control (and a 403, with
nothing changed) for a role that may not give money back."""

from __future__ import annotations

import io
import re

import httpx
import pytest
from pypdf import PdfReader

from cloud.accounts.apikeys import Principal
from cloud.billing.orders import Billing, OrderLine
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_REFUND_FAILS, CARD_SETTLED
from cloud.devices import memberships
from tests.cloud.conftest import Cloud
from tests.cloud.harness import every_row, new_user
from tests.cloud.pages import csrf_of, line_rows, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ADMIN = Principal(key_id=None, name="tests", role="admin")
VOICE = (OrderLine("TSF12125", "Voice Control, 12 months", 12, 3_600),)
REMOTE = (OrderLine("TSF16100", "Remote Services, 12 months", 12, 6_000),)
# a form that posts to an order's (or a subscription's, or a blacklist) action; resending a
# mail moves no money and is support's to do
_MONEY_FORM = re.compile(
    r'<form[^>]*action="[^"]*(/orders/(?![0-9]+/resend")|subscription|blacklist)[^"]*"'
)


def _billing(cloud: Cloud) -> Billing:
    assert cloud.state.billing is not None
    return cloud.state.billing


async def _order(
    cloud: Cloud, inst: str, key: str, buyer: int, lines: tuple[OrderLine, ...], card: str
) -> int:
    result = await _billing(cloud).place_order(
        kind="purchase",
        buyer=buyer,
        installation_id=inst,
        lines=lines,
        pay_with="card",
        card_token=card,
        idempotency_key=key,
        now=cloud.clock(),
    )
    return result.order_id


@pytest.fixture
async def shop(cloud: Cloud) -> dict[str, int | str]:
    """Anna owns the Villa (a settled and an unsettled charge); Bram the Bakery (declined)."""
    villa, bakery = await cloud.installation("Villa"), await cloud.installation("Bakery")
    anna = new_user(cloud.app, role="owner", email="anna@villa.example")
    bram = new_user(cloud.app, role="owner", email="bram@bakery.example")
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, villa, anna, actor="system:tests", now=cloud.clock())
        memberships.set_owner(tx, bakery, bram, actor="system:tests", now=cloud.clock())
    return {
        "villa": villa,
        "bakery": bakery,
        "settled": await _order(cloud, villa, "s", anna, REMOTE, CARD_SETTLED),
        "unsettled": await _order(cloud, villa, "u", anna, VOICE, CARD_OK),
        "declined": await _order(cloud, bakery, "d", bram, REMOTE, CARD_DECLINED),
    }


def _numbers(html: str) -> list[str]:
    return re.findall(r">(EN-\d{4}-\d{6})</a>", html)


async def test_history_searches_sorts_and_shows_failed_charges(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    settled, unsettled, declined = (
        f"EN-2026-{shop[k]:06d}" for k in ("settled", "unsettled", "declined")
    )
    async with signed_in(cloud.app, role="support") as (http, _):
        page = await http.get("/orders")
        assert page.status_code == 200
        assert _numbers(page.text) == [declined, unsettled, settled]
        assert "3 orders" in page.text and "anna@villa.example" in page.text
        failed = await http.get("/orders", params={"status": "Failed"})
        assert _numbers(failed.text) == [declined] and "card declined" in failed.text
        by_service = await http.get("/orders", params={"service": "TSF12125"})
        assert _numbers(by_service.text) == [unsettled]
        by_customer = await http.get("/orders", params={"customer": "BAKERY", "status": ""})
        assert _numbers(by_customer.text) == [declined]
        by_place = await http.get("/orders", params={"installation": shop["bakery"]})
        assert _numbers(by_place.text) == [declined]
        assert "Orders of installation Bakery only." in by_place.text
        by_number = await http.get("/orders", params={"number": settled.lower()})
        assert _numbers(by_number.text) == [settled]
        cheap_first = await http.get("/orders", params={"sort": "amount", "dir": "asc"})
        assert _numbers(cheap_first.text)[0] == unsettled
        assert 'aria-sort="ascending"' in cheap_first.text
        today = "2026-01-01"
        assert len(_numbers((await http.get("/orders", params={"since": today})).text)) == 3
        assert _numbers((await http.get("/orders", params={"until": "2025-12-31"})).text) == []
        nothing = await http.get("/orders", params={"customer": "nobody"})
        assert "No order matches." in nothing.text
        for bad in ({"status": "Paid"}, {"sort": "buyer"}, {"since": "1.1.2026"}, {"page": "0"}):
            assert (await http.get("/orders", params=bad)).status_code == 422, bad
        assert (await http.get("/orders", params={"limit": "5"})).status_code == 422


async def test_an_owner_sees_its_own_orders_and_the_same_404_for_another(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    async with signed_in(cloud.app, role="owner") as (http, uid):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, str(shop["bakery"]), uid, actor="system:tests", now=1)
        page = await http.get("/orders")
        assert _numbers(page.text) == [f"EN-2026-{shop['declined']:06d}"]
        theirs = await http.get(f"/orders/{shop['settled']}")
        missing = await http.get("/orders/999999")
        assert theirs.status_code == missing.status_code == 404
        assert re.sub(r"order \d+", "order N", theirs.text) == re.sub(
            r"order \d+", "order N", missing.text
        )
        assert (await http.get(f"/orders/{shop['settled']}/invoice.pdf")).status_code == 404
        mine = await http.get(f"/orders/{shop['declined']}")
        assert mine.status_code == 200 and "Give the money back" not in mine.text
        assert (await http.get(f"/orders/{shop['declined']}/void")).status_code == 403


async def _confirmed(
    http: httpx.AsyncClient, order_id: int | str, action: str, **data: str
) -> httpx.Response:
    confirm = await http.get(f"/orders/{order_id}/{action}")
    assert confirm.status_code == 200, confirm.text[:300]
    return await http.post(
        f"/orders/{order_id}/{action}", data={"csrf_token": csrf_of(confirm.text), **data}
    )


async def test_cs_admin_voids_the_unsettled_charge_and_refunds_the_settled_one(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        order = await http.get(f"/orders/{shop['unsettled']}")
        assert "has not settled yet: it can be voided" in order.text
        assert f'href="/orders/{shop["unsettled"]}/void"' in order.text
        assert f"/orders/{shop['unsettled']}/refund" not in order.text
        confirm = await http.get(f"/orders/{shop['unsettled']}/void")
        assert "The whole card charge of €36.00 is cancelled" in confirm.text
        assert "(TSF12125) end now" in confirm.text
        rows = every_row(cloud.app)
        assert (await http.get(f"/orders/{shop['unsettled']}/refund")).status_code == 303
        assert every_row(cloud.app) == rows  # confirm pages change nothing

        voided = await http.post(
            f"/orders/{shop['unsettled']}/void", data={"csrf_token": csrf_of(confirm.text)}
        )
        assert voided.status_code == 303
        after = await http.get(voided.headers["location"])
        assert "is voided: the charge of €36.00 is cancelled" in after.text
        assert (
            "Cancelled" in after.text and "Only a paid order has money to give back." in after.text
        )

        order = await http.get(f"/orders/{shop['settled']}")
        assert "€60.00 of it can be refunded" in order.text
        bad = await _confirmed(http, shop["settled"], "refund", amount="12.345")
        assert bad.status_code == 422 and "at most two decimals" in bad.text
        too_much = await _confirmed(http, shop["settled"], "refund", amount="60.01")
        assert too_much.status_code == 422 and "more than is left" in too_much.text
        part = await _confirmed(http, shop["settled"], "refund", amount="10,00")
        assert part.status_code == 303
        after = await http.get(part.headers["location"])
        assert "€10.00 of order" in after.text and "€50.00 of it can be refunded" in after.text
        rest = await _confirmed(http, shop["settled"], "refund", amount="")
        after = await http.get(rest.headers["location"])
        assert "€50.00 of order" in after.text
        assert "refunded in full already" in after.text
    assert cloud.state.orders is not None
    detail = cloud.state.orders.detail(ADMIN, int(shop["settled"]))
    assert [(t.type.value, t.amount_cents) for t in detail.transactions] == [
        ("charge", 6_000),
        ("refund", 1_000),
        ("refund", 5_000),
    ]


async def test_support_is_offered_nothing_and_a_forged_void_changes_nothing(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    async with signed_in(cloud.app, role="support") as (http, _):
        for url in ("/orders", f"/orders/{shop['unsettled']}", f"/orders/{shop['settled']}"):
            page = await http.get(url)
            assert page.status_code == 200
            assert not _MONEY_FORM.search(page.text), url
            assert "/void" not in page.text and "/refund" not in page.text
            if url != "/orders":
                assert f'action="{url}/resend"' in page.text  # support resends the invoice
        token = csrf_of((await http.get("/orders")).text)
        rows = every_row(cloud.app)
        for action in ("void", "refund"):
            forged = await http.post(
                f"/orders/{shop['unsettled']}/{action}", data={"csrf_token": token}
            )
            assert forged.status_code == 403, action
            assert "refunds" in forged.text  # the permission it lacks, said on the page
        assert every_row(cloud.app) == rows


async def test_a_post_without_the_csrf_token_is_refused(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        rows = every_row(cloud.app)
        for data in ({}, {"csrf_token": "0" * 64}):
            refused = await http.post(f"/orders/{shop['unsettled']}/void", data=data)
            assert refused.status_code == 403
        assert every_row(cloud.app) == rows


async def test_the_invoice_downloads_as_the_api_gives_it(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    async with signed_in(cloud.app, role="owner") as (http, uid):
        with cloud.state.store.transaction() as tx:
            memberships.set_owner(tx, str(shop["villa"]), uid, actor="system:tests", now=1)
        order = await http.get(f"/orders/{shop['settled']}")
        assert f'href="/orders/{shop["settled"]}/invoice.pdf"' in order.text
        # one installation: one line row, and no installation column in the lines table
        [row] = line_rows(order.text)
        assert "TSF16100" in row and row.endswith("€60.00") and "1 × €60.00" in row, row
        table = order.text.split('class="order-lines"')[1].split("</table>")[0]
        assert "Installation" not in table and str(shop["villa"]) not in table
        got = await http.get(f"/orders/{shop['settled']}/invoice.pdf")
        assert got.status_code == 200 and got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith("attachment;")
        api = await cloud.http.get(f"/api/v1/orders/{shop['settled']}/invoice.pdf")
        assert got.content == api.content
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(got.content)).pages)
        assert f"EN-2026-{shop['settled']:06d}" in text and "60.00" in text
        declined = await http.get(f"/orders/{shop['declined']}")
        assert declined.status_code == 404  # Bram's, not this owner's


async def test_a_refund_the_provider_fails_shows_its_retry_state(
    cloud: Cloud, shop: dict[str, int | str]
) -> None:
    anna = await _owner_of(cloud, str(shop["villa"]))
    order = await _order(cloud, str(shop["villa"]), "f", anna, VOICE, CARD_REFUND_FAILS)
    await _billing(cloud).provider.settle_all()
    async with signed_in(cloud.app, role="admin") as (http, _):
        queued = await _confirmed(http, order, "refund", amount="")
        assert queued.status_code == 303
        page = await http.get(queued.headers["location"])
        assert "did not refund €36.00" in page.text and "three times" in page.text
        assert "retry waiting" in page.text and "0 of 3 retries done; next on" in page.text
        # a queued refund counts as given back: nothing is left to refund twice
        assert "refunded in full already" in page.text


async def _owner_of(cloud: Cloud, installation_id: str) -> int:
    with cloud.state.store.transaction() as tx:
        owner = memberships.members(tx, installation_id).owner_user_id
    assert owner is not None
    return owner
