"""Orders and payments, and customers, in a real browser.

- issue 15, must show 1b: support signs in, looks a customer up and reads its authorised
  contacts, and no page it visits has a control that changes a subscription, an order or
  the blacklist (every POST form on those pages is the sign-out); a forged form POST with
  support's session and a valid CSRF token taken from a page is 403, and the REST API
  shows nothing changed.
- must show 1d: a customer-service admin voids an unsettled order and refunds a settled
  one through their confirm steps; the invoice PDF downloads (Playwright's download API)
  and reads right (pypdf: order number, amounts, customer).
- every page built here, as every role that may open it, screenshotted and checked by
  axe-core (``shoot``).
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from pypdf import PdfReader

from cloud.billing.payments import CARD_OK, CARD_SETTLED
from tests.browser.conftest import Dashboard

_CHANGES = ("/orders/", "subscription", "blacklist", "/renew", "/auto-renew", "/buy")


def _post_forms(page: Any) -> list[str]:
    """The action of every POST form on the page."""
    actions: list[str] = page.eval_on_selector_all(
        "form",
        "forms => forms.filter(f => f.method.toLowerCase() === 'post')"
        ".map(f => f.getAttribute('action') || '')",
    )
    return actions


def _nothing_changes(page: Any) -> None:
    """The page offers no control that changes anything: its one POST form signs out (besides
    resending an order's mail, which support does: it moves no money and changes no order)."""
    actions = [a for a in _post_forms(page) if not re.fullmatch(r"/orders/\d+/resend", a)]
    assert actions == ["/logout"], f"{page.url}: forms posting to {actions}"
    content = page.content()
    assert not any(f'action="{a}' in content for a in _CHANGES if a != "/orders/")


@pytest.fixture(scope="module")
def shop(dashboard: Dashboard) -> dict[str, Any]:
    """Bakkerij De Molen: owned by a new owner, integrated by the card-paying partner company,
    with two card orders bought through the REST API: Voice Control (a charge that settles at
    once, the sandbox's 4000000000000077) and Remote Services (an unsettled one)."""
    owner = dashboard.new_user("molen_owner", "owner")
    installation = dashboard.new_installation(
        "Bakkerij De Molen", owner="molen_owner", integrators=("card",)
    )
    dashboard.connect(installation)
    for product, card in (("TSF12125", CARD_SETTLED), ("TSF16100", CARD_OK)):
        dashboard.call(
            "POST",
            "/subscriptions",
            json={
                "installation_id": installation,
                "product": product,
                "pay_with": "card",
                "card_token": card,
                "purchaser_id": owner["id"],
            },
        )
    orders = dashboard.call("GET", "/orders", params={"installation_id": installation})
    by_code = {}
    for order in orders:
        detail = dashboard.call("GET", f"/orders/{order['id']}")
        by_code[detail["lines"][0]["product_code"]] = detail
    return {
        "owner": owner,
        "installation": installation,
        "settled": by_code["TSF12125"],
        "unsettled": by_code["TSF16100"],
    }


def test_support_reads_the_contacts_and_can_change_nothing(
    login: Any, dashboard: Dashboard, shop: dict[str, Any], shoot: Any
) -> None:
    page = login("support")
    page.click("nav >> text=Customers")
    page.wait_for_url("**/customers")
    _nothing_changes(page)
    shoot(page, "customers-support")

    page.fill("#q", shop["owner"]["email"])
    page.check("input[name=by][value=email]")
    page.click("form[role=search] button[type=submit]")
    page.click(f"a[href='/customers/users/{shop['owner']['id']}']")
    page.wait_for_url(f"**/customers/users/{shop['owner']['id']}")
    contacts = page.locator("table.contacts").first
    assert shop["owner"]["email"] in contacts.inner_text()
    card_partner = dashboard.email("card_partner")
    assert card_partner in contacts.inner_text()  # the integrator's partner user
    _nothing_changes(page)
    shoot(page, "customer-owner-support")

    page.goto("/customers?by=partner_id&q=" + _partner_id(dashboard, "card"))
    page.click(f"a[href='/customers/companies/{dashboard.companies['card']}']")
    assert "Kaart Installaties" in page.locator("h1").inner_text()
    _nothing_changes(page)
    shoot(page, "customer-company-support")

    page.goto("/customers?by=installation&q=molen")
    assert shop["owner"]["email"] in page.locator("table.contacts").inner_text()
    _nothing_changes(page)
    shoot(page, "customers-by-installation-support")

    page.goto(f"/customers/users/{shop['owner']['id']}")  # on to the installation's page
    page.click(f"a[href='/installations/{shop['installation']}']")
    page.wait_for_url(f"**/installations/{shop['installation']}")
    _nothing_changes(page)

    page.goto("/orders")
    _nothing_changes(page)
    shoot(page, "orders-support")
    page.goto(f"/orders/{shop['settled']['id']}")
    assert page.locator("#give-back").count() == 0
    _nothing_changes(page)
    shoot(page, "order-support")

    # a forged POST: support's own session and a valid CSRF token taken from the page
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    before = _state(dashboard, shop)
    for url, form in (
        (f"/customers/users/{shop['owner']['id']}/blacklist", {"blacklisted": "on", "reason": "x"}),
        (
            f"/customers/companies/{dashboard.companies['card']}/blacklist",
            {"blacklisted": "on", "reason": "x"},
        ),
        (f"/orders/{shop['unsettled']['id']}/void", {}),
        (f"/orders/{shop['settled']['id']}/refund", {"amount": "1.00"}),
    ):
        answer = page.request.post(url, form={"csrf_token": token, **form}, max_redirects=0)
        assert answer.status == 403, f"{url}: {answer.status}"
    assert _state(dashboard, shop) == before


def _partner_id(dashboard: Dashboard, company: str) -> str:
    return str(dashboard.call("GET", f"/companies/{dashboard.companies[company]}")["partner_id"])


def _state(dashboard: Dashboard, shop: dict[str, Any]) -> dict[str, Any]:
    """What a forged POST could have changed, as the REST API shows it."""
    return {
        "owner": dashboard.call("GET", f"/users/{shop['owner']['id']}")["blacklisted"],
        "company": dashboard.call("GET", f"/companies/{dashboard.companies['card']}")[
            "blacklisted"
        ],
        "orders": [
            (o["status"], [(t["type"], t["status"]) for t in o["transactions"]])
            for o in (
                dashboard.call("GET", f"/orders/{shop[k]['id']}") for k in ("settled", "unsettled")
            )
        ],
        "subscriptions": dashboard.call(
            "GET", "/subscriptions", params={"installation_id": shop["installation"]}
        ),
    }


def test_cs_admin_voids_refunds_and_downloads_the_invoice(
    login: Any, dashboard: Dashboard, shop: dict[str, Any], shoot: Any
) -> None:
    page = login("cs_admin")
    page.goto(f"/orders?installation={shop['installation']}")
    shoot(page, "orders-cs_admin")
    unsettled, settled = shop["unsettled"], shop["settled"]

    page.click(f"a:text-is('{unsettled['number']}')")
    assert "has not settled yet: it can be voided" in page.locator("#give-back").inner_text()
    shoot(page, "order-unsettled-cs_admin")
    page.click("text=Void this charge…")
    page.wait_for_url(f"**/orders/{unsettled['id']}/void")
    confirm = page.locator("article.confirm").inner_text()
    assert "€60.00" in confirm and shop["owner"]["email"] in confirm and "TSF16100" in confirm
    shoot(page, "order-void-confirm-cs_admin")
    page.click("button:has-text('Void the charge of')")
    page.wait_for_url(f"**/orders/{unsettled['id']}")
    assert "is voided: the charge of €60.00 is cancelled" in page.locator(".flash").inner_text()
    shoot(page, "order-voided-cs_admin")
    assert dashboard.call("GET", f"/orders/{unsettled['id']}")["status"] == "Cancel"

    page.goto(f"/orders/{settled['id']}")
    assert "€36.00 of it can be refunded" in page.locator("#give-back").inner_text()
    page.click("text=Refund…")
    page.wait_for_url(f"**/orders/{settled['id']}/refund")
    shoot(page, "order-refund-confirm-cs_admin")
    page.click("button:has-text('Refund the amount')")  # empty: all that is left
    page.wait_for_url(f"**/orders/{settled['id']}")
    assert (
        f"€36.00 of order {settled['number']} is refunded." in page.locator(".flash").inner_text()
    )
    shoot(page, "order-refunded-cs_admin")
    after = dashboard.call("GET", f"/orders/{settled['id']}")
    assert [(t["type"], t["status"], t["amount_cents"]) for t in after["transactions"]] == [
        ("charge", "Succeed", 3_600),
        ("refund", "Succeed", 3_600),
    ]

    with page.expect_download() as info:
        page.click("text=Download the invoice (PDF)")
    download = info.value
    assert download.suggested_filename.endswith(".pdf")
    pdf = PdfReader(io.BytesIO(open(download.path(), "rb").read()))
    text = "\n".join(p.extract_text() for p in pdf.pages)
    assert settled["number"] in text
    assert "Voice Control" in text and "36.00" in text
    assert shop["owner"]["name"] in text and shop["owner"]["email"] in text


def test_every_role_sees_its_own_orders(
    login: Any, dashboard: Dashboard, shop: dict[str, Any], shoot: Any
) -> None:
    numbers = {shop["settled"]["number"], shop["unsettled"]["number"]}
    for who, sees in (
        ("admin", True),
        ("card_partner", True),  # its company integrates the bakery
        ("partner", False),
        ("molen_owner", True),
        ("other_owner", False),
    ):
        page = login(who)
        page.goto("/orders")
        listed = set(re.findall(r"EN-\d{4}-\d{6}", page.locator("main").inner_text()))
        assert (numbers <= listed) is sees, who
        shoot(page, f"orders-{who}")
        if sees:
            page.goto(f"/orders/{shop['settled']['id']}")
            assert page.locator("h1").inner_text().startswith("Order ")
            shoot(page, f"order-{who}")
        else:
            page.goto(f"/orders/{shop['settled']['id']}")
            assert page.locator("h1").inner_text() == "Not found"
    page = login("admin")
    page.goto(f"/customers/users/{shop['owner']['id']}")
    shoot(page, "customer-owner-admin")
    page = login("molen_owner", phone=True)
    page.goto("/orders")
    shoot(page, "orders-owner-phone")
