"""What the orders page asks of the order service: a searchable, sortable, counted history,
and whether an order's money would be voided or refunded now (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Role
from cloud.billing.orders import Billing, OrderLine
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_SETTLED
from cloud.billing.service import OrderFilter, OrderService
from cloud.devices import memberships
from cloud.errors import UnknownInstallation
from tests.cloud.harness import DAY, Cloud, new_company, new_user

ADMIN = Principal(key_id=None, name="tests", role="admin")
VOICE = (OrderLine("TSF12125", "Voice Control, 12 months", 12, 3_600),)
REMOTE = (OrderLine("TSF16100", "Remote Services, 12 months", 12, 6_000),)


def _orders(cloud: Cloud) -> OrderService:
    assert cloud.state.orders is not None
    return cloud.state.orders


def _billing(cloud: Cloud) -> Billing:
    assert cloud.state.billing is not None
    return cloud.state.billing


async def _order(
    cloud: Cloud, inst: str, key: str, buyer: int, lines: tuple[OrderLine, ...], **kw: str
) -> int:
    result = await _billing(cloud).place_order(
        kind=kw.get("kind", "purchase"),
        buyer=buyer,
        installation_id=inst,
        lines=lines,
        pay_with=kw.get("pay_with", "card"),
        card_token=kw.get("card"),
        idempotency_key=key,
        now=cloud.clock(),
    )
    return result.order_id


@pytest.fixture
async def history(cloud: Cloud) -> dict[str, int | str]:
    """Four orders of two customers over three days, one declined."""
    home = await cloud.installation("Villa Zonneweide")
    shop = await cloud.installation("Bakery")
    anna = new_user(cloud.app, role="owner", email="anna@zonneweide.example")
    company = new_company(cloud.app, name="Fitters & Co")
    piet = new_user(cloud.app, role="partner", email="piet@fitters.example", company_id=company)
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, home, anna, actor="system:tests", now=cloud.clock())
        memberships.add_integrator(tx, shop, company, actor="system:tests", now=cloud.clock())
    first = await _order(cloud, home, "h1", anna, VOICE, card=CARD_OK)
    cloud.clock.advance(DAY)
    declined = await _order(cloud, shop, "h2", piet, REMOTE, card=CARD_DECLINED)
    cloud.clock.advance(DAY)
    both = await _order(cloud, shop, "h3", piet, VOICE + REMOTE, pay_with="invoice")
    unpaid = await _order(cloud, home, "h4", anna, REMOTE)
    return {
        "home": home,
        "shop": shop,
        "anna": anna,
        "piet": piet,
        "first": first,
        "declined": declined,
        "both": both,
        "unpaid": unpaid,
    }


def _ids(cloud: Cloud, who: Principal = ADMIN, **which: object) -> list[int]:
    return [o.id for o in _orders(cloud).history(who, OrderFilter(**which)).items]  # type: ignore[arg-type]


async def test_history_searches_by_service_customer_date_and_status(
    cloud: Cloud, history: dict[str, int | str]
) -> None:
    h = history
    assert _ids(cloud) == [h["unpaid"], h["both"], h["declined"], h["first"]]
    assert _ids(cloud, service="TSF12125") == [h["both"], h["first"]]
    assert _ids(cloud, customer="ZONNEWEIDE") == [h["unpaid"], h["first"]]  # e-mail, any case
    assert _ids(cloud, customer="fitters &") == [h["both"], h["declined"]]  # company name
    assert _ids(cloud, customer="bakery") == [h["both"], h["declined"]]  # installation name
    assert _ids(cloud, customer="%") == []  # a wildcard is a character here
    start = cloud.clock() - 2 * DAY
    assert _ids(cloud, since=start + DAY, until=start + 2 * DAY) == [h["declined"]]
    assert _ids(cloud, status="Failed") == [h["declined"]]
    failed = OrderFilter(status="Failed")  # type: ignore[arg-type]
    page = _orders(cloud).history(ADMIN, failed, service_codes=True)
    assert page.total == 1 and page.items[0].last_error  # why the card was declined
    assert page.items[0].customer_email == "piet@fitters.example"
    assert page.items[0].installation_name == "Bakery"
    assert page.services == ["TSF12125", "TSF16100"]


async def test_history_sorts_and_pages_with_a_total(
    cloud: Cloud, history: dict[str, int | str]
) -> None:
    h = history
    by_amount = _ids(cloud, sort="amount", descending=False)
    assert by_amount == [h["first"], h["declined"], h["unpaid"], h["both"]]  # 36, 60, 60, 96
    assert _ids(cloud, sort="number", descending=False) == sorted(by_amount)
    pages = [
        _orders(cloud).history(ADMIN, OrderFilter(limit=3, offset=offset)) for offset in (0, 3)
    ]
    assert [p.total for p in pages] == [4, 4]
    assert [o.id for p in pages for o in p.items] == _ids(cloud)
    with pytest.raises(ValueError):
        _ids(cloud, sort="buyer_user_id")


async def test_history_of_a_customer_is_its_own_installations_only(
    cloud: Cloud, history: dict[str, int | str]
) -> None:
    h = history
    anna = Principal(key_id=None, name="anna", role=Role.OWNER, user_id=int(h["anna"]))
    piet = Principal(key_id=None, name="piet", role=Role.PARTNER, user_id=int(h["piet"]))
    assert _ids(cloud, anna) == [h["unpaid"], h["first"]]
    assert _ids(cloud, piet, customer="zonneweide") == []
    codes = _orders(cloud).history(piet, OrderFilter(), service_codes=True).services
    assert codes == ["TSF12125", "TSF16100"]
    assert _orders(cloud).history(piet, OrderFilter()).services == []  # not asked for
    assert _orders(cloud).history(anna, OrderFilter()).total == 2
    with pytest.raises(UnknownInstallation):
        _ids(cloud, anna, installation_id=h["shop"])


async def test_reversal_option_is_void_before_settling_and_refund_after(
    cloud: Cloud, history: dict[str, int | str]
) -> None:
    h = history
    orders = _orders(cloud)
    first = await orders.reversal_option(ADMIN, int(h["first"]))  # two days ago: settled
    assert (first.action, first.settled, first.left_cents) == ("refund", True, 3_600)
    fresh = await _order(cloud, str(h["home"]), "h5", int(h["anna"]), VOICE, card=CARD_OK)
    option = await orders.reversal_option(ADMIN, fresh)
    assert (option.action, option.settled, option.left_cents) == ("void", False, 3_600)
    await orders.refund(ADMIN, int(h["first"]), amount_cents=1_000)
    first = await orders.reversal_option(ADMIN, int(h["first"]))
    assert (first.action, first.refunded_cents, first.left_cents) == ("refund", 1_000, 2_600)
    await orders.refund(ADMIN, int(h["first"]), amount_cents=None)
    assert (await orders.reversal_option(ADMIN, int(h["first"]))).why_not == "refunded"
    assert (await orders.reversal_option(ADMIN, int(h["both"]))).why_not == "invoiced"
    assert (await orders.reversal_option(ADMIN, int(h["declined"]))).why_not == "not_paid"
    await orders.void(ADMIN, fresh, amount_cents=None)
    assert (await orders.reversal_option(ADMIN, fresh)).why_not == "not_paid"  # now Cancel
    # the sandbox's settled-at-once test card: a refund straight away, no clock to wait for
    settled = await _order(cloud, str(h["home"]), "h6", int(h["anna"]), VOICE, card=CARD_SETTLED)
    option = await orders.reversal_option(ADMIN, settled)
    assert (option.action, option.settled) == ("refund", True)


async def test_customer_activity_is_installations_contacts_and_orders(
    cloud: Cloud, history: dict[str, int | str]
) -> None:
    h = history
    company = new_company(cloud.app, name="Fitters & Co 2")
    staff = new_user(cloud.app, role="partner", email="tech@entitle.example", company_id=company)
    with cloud.state.store.transaction() as tx:
        memberships.add_integrator(tx, str(h["home"]), company, actor="system:tests", now=0)
    support = Principal(key_id=None, name="support", role=Role.SUPPORT, user_id=None)
    anna = _orders(cloud).customer_activity(support, user_id=int(h["anna"]))
    [home] = anna.installations
    assert (home.id, home.name, home.owner_user_id) == (h["home"], "Villa Zonneweide", h["anna"])
    assert home.integrator_company_ids == [company]
    # the owner is a contact; a vendor technician working for an integrator is not
    assert [c.email for c in home.contacts] == ["anna@zonneweide.example"]
    assert staff not in [c.user_id for c in home.contacts]
    assert [o.id for o in anna.orders] == [h["unpaid"], h["first"]] and anna.orders_total == 2
    fitters = _orders(cloud).customer_activity(support, company_id=company, order_limit=1)
    assert [i.id for i in fitters.installations] == [h["home"]]
    assert (len(fitters.orders), fitters.orders_total) == (1, 2)
    both = _orders(cloud).customer_activity(support, installation_id=str(h["shop"]))
    assert [c.email for c in both.installations[0].contacts] == ["piet@fitters.example"]
    found = _orders(cloud).customer_activity(support, installation_search="ZONNE")
    assert [i.id for i in found.installations] == [h["home"]]
    found = _orders(cloud).customer_activity(support, installation_search=str(h["shop"]))
    assert [i.id for i in found.installations] == [h["shop"]]
    assert _orders(cloud).customer_activity(support, installation_search="_").installations == []
    nobody = _orders(cloud).customer_activity(support)
    assert (nobody.installations, nobody.orders_total) == ([], 0)
    piet = Principal(key_id=None, name="piet", role=Role.PARTNER, user_id=int(h["piet"]))
    assert _orders(cloud).customer_activity(piet, user_id=int(h["anna"])).installations == []
    with pytest.raises(UnknownInstallation):
        _orders(cloud).customer_activity(piet, installation_id=str(h["home"]))
