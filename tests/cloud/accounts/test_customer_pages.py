"""The customers pages without a browser: look up an account (name, e-mail, partner id,
installation), its authorised contacts (never vendor staff), installations and orders;
blacklisting with a reason for cs_admin and admin only; support sees it all, is offered
no control, and a forged POST is refused with nothing changed."""

from __future__ import annotations

import re

import pytest

from cloud.accounts.rules import PaymentType
from cloud.accounts.users import create_company
from cloud.billing.orders import OrderLine
from cloud.billing.payments import CARD_OK
from cloud.devices import memberships
from tests.cloud.conftest import Cloud
from tests.cloud.harness import every_row, new_user
from tests.cloud.pages import csrf_of, signed_in

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

# a form that posts to an order's, a subscription's or a blacklist action
_CHANGING_FORM = re.compile(r'<form[^>]*action="[^"]*(/orders/|subscription|blacklist)[^"]*"')


@pytest.fixture
async def customers(cloud: Cloud) -> dict[str, int | str]:
    """De Vries Installaties (P-4711) integrates the Villa that Marie owns; one order."""
    with cloud.state.store.transaction() as tx:
        company = create_company(
            tx,
            name="De Vries Installaties",
            partner_id="P-4711",
            payment_type=PaymentType.INVOICE,
            actor="system:tests",
            now=cloud.clock(),
        ).id
    jan = new_user(cloud.app, role="partner", email="jan@devries.example", company_id=company)
    tech = new_user(cloud.app, role="partner", email="tech@entitle.example", company_id=company)
    marie = new_user(cloud.app, role="owner", email="marie@villa.example")
    villa = await cloud.installation("Villa Zonneweide")
    with cloud.state.store.transaction() as tx:
        memberships.set_owner(tx, villa, marie, actor="system:tests", now=cloud.clock())
        memberships.add_integrator(tx, villa, company, actor="system:tests", now=cloud.clock())
    assert cloud.state.billing is not None
    order = await cloud.state.billing.place_order(
        kind="purchase",
        buyer=marie,
        installation_id=villa,
        lines=(OrderLine("TSF16100", "Remote Services, 12 months", 12, 6_000),),
        pay_with="card",
        card_token=CARD_OK,
        idempotency_key="c1",
        now=cloud.clock(),
    )
    return {
        "company": company,
        "jan": jan,
        "tech": tech,
        "marie": marie,
        "villa": villa,
        "order": order.number,
    }


async def test_support_finds_the_authorised_contacts_and_changes_nothing(
    cloud: Cloud, customers: dict[str, int | str]
) -> None:
    c = customers
    async with signed_in(cloud.app, role="support") as (http, _):
        pages = {}
        for params in (
            {"q": "marie@", "by": "email"},
            {"q": "p-4711", "by": "partner_id"},
            {"q": "vries", "by": "name"},
            {"q": "zonneweide", "by": "installation"},
        ):
            found = await http.get("/customers", params=params)
            assert found.status_code == 200, params
            pages[params["by"]] = found.text
        assert f'href="/customers/users/{c["marie"]}"' in pages["email"]
        assert f'href="/customers/companies/{c["company"]}"' in pages["partner_id"]
        assert f'href="/customers/users/{c["jan"]}"' in pages["partner_id"]
        assert "De Vries Installaties" in pages["name"]
        # by installation: the owner, the integrator and the contacts, never vendor staff
        assert "marie@villa.example" in pages["installation"]
        assert "jan@devries.example" in pages["installation"]
        assert "tech@entitle.example" not in pages["installation"]

        marie = await http.get(f"/customers/users/{c['marie']}")
        assert marie.status_code == 200
        assert "Authorised contacts" in marie.text and "Villa Zonneweide" in marie.text
        assert "jan@devries.example" in marie.text and "tech@entitle.example" not in marie.text
        assert str(c["order"]) in marie.text
        company = await http.get(f"/customers/companies/{c['company']}")
        assert "P-4711" in company.text and "tech@entitle.example" in company.text  # its user
        for text in (*pages.values(), marie.text, company.text):
            assert not _CHANGING_FORM.search(text)
            assert 'name="reason"' not in text

        token = csrf_of(marie.text)  # the sign-out form's: a valid token for this session
        rows = every_row(cloud.app)
        for url in (
            f"/customers/users/{c['marie']}/blacklist",
            f"/customers/companies/{c['company']}/blacklist",
        ):
            forged = await http.post(
                url, data={"csrf_token": token, "blacklisted": "on", "reason": "forged"}
            )
            assert forged.status_code == 403, url
            assert "only customer-service admins and admins blacklist" in forged.text
        assert every_row(cloud.app) == rows
        staff = await http.get(f"/customers/users/{c['tech']}")
        assert staff.status_code == 200  # a partner user, even at the vendor's domain


async def test_cs_admin_blacklists_with_a_reason_and_takes_it_back(
    cloud: Cloud, customers: dict[str, int | str]
) -> None:
    c = customers
    async with signed_in(cloud.app, role="cs_admin") as (http, _):
        page = await http.get(f"/customers/companies/{c['company']}")
        assert "Blacklist the company and all its users" in page.text
        token = csrf_of(page.text)
        url = f"/customers/companies/{c['company']}/blacklist"
        rows = every_row(cloud.app)
        empty = await http.post(url, data={"csrf_token": token, "blacklisted": "on"})
        assert empty.status_code == 422 and "Say why" in empty.text
        assert every_row(cloud.app) == rows
        done = await http.post(
            url, data={"csrf_token": token, "blacklisted": "on", "reason": "chargebacks"}
        )
        assert done.status_code == 303
        page = await http.get(done.headers["location"])
        assert "is blacklisted: they can look, but not buy" in page.text
        assert "“chargebacks”" in page.text and "Take off the blacklist" in page.text
        jan = await http.get(f"/customers/users/{c['jan']}")
        assert "Blacklist this customer" in jan.text  # the user's own flag is off
        undone = await http.post(
            url,
            data={"csrf_token": csrf_of(page.text), "blacklisted": "off", "reason": "paid up"},
        )
        page = await http.get(undone.headers["location"])
        assert "off the blacklist" in page.text and "“paid up”" in page.text
    company = cloud.state.accounts.company(int(c["company"]))  # type: ignore[union-attr]
    assert company.blacklisted is False


async def test_customers_pages_are_staff_only_and_never_show_staff(
    cloud: Cloud, customers: dict[str, int | str]
) -> None:
    c = customers
    admin = new_user(cloud.app, role="admin", email="boss@entitle.example")
    async with signed_in(cloud.app, role="owner") as (http, _):
        assert (await http.get("/customers")).status_code == 403
        assert (await http.get(f"/customers/users/{c['marie']}")).status_code == 403
    async with signed_in(cloud.app, role="partner") as (http, _):
        assert (await http.get("/customers", params={"q": "x"})).status_code == 403
    async with signed_in(cloud.app, role="admin") as (http, _):
        assert (await http.get(f"/customers/users/{admin}")).status_code == 404
        found = await http.get("/customers", params={"q": "entitle.example", "by": "email"})
        assert "boss@" not in found.text and "tech@entitle.example" in found.text
        assert (await http.get("/customers", params={"by": "phone"})).status_code == 422
        nothing = await http.get("/customers", params={"q": "nobody", "by": "name"})
        assert "No customer matches." in nothing.text
