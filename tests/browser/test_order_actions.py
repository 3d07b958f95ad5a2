"""Issue 17's order actions and invoicing details in a real browser, screenshotted and
axe-checked (``shoot``): a customer hides a paid order from their history and shows it
again; support resends its invoice; lines show quantity × unit price; a customer-service
admin fills in a company's invoicing details (a wrong VAT number is refused on the page), and
a partner their own company's (``/profile/company``)."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.billing.payments import CARD_OK
from tests.browser.conftest import Dashboard


@pytest.fixture(scope="module")
def bought(dashboard: Dashboard) -> dict[str, Any]:
    """A card order of Remote Services, placed by the seeded owner for "Harbour Office"."""
    installation = dashboard.installations["Harbour Office"]
    dashboard.call(
        "POST",
        "/subscriptions",
        json={
            "installation_id": installation,
            "product": "TSF16100",
            "pay_with": "card",
            "card_token": CARD_OK,
            "purchaser_id": dashboard.users["owner"]["id"],
        },
    )
    [order, *_] = dashboard.call("GET", "/orders", params={"installation_id": installation})
    return dict(order)


def test_an_owner_hides_an_order_and_shows_it_again(
    login: Any, shoot: Any, bought: dict[str, Any]
) -> None:
    page = login("owner")
    page.goto(f"/orders/{bought['id']}")
    # one lines table: quantity × unit price and the amount in the line's row
    assert page.get_by_role("columnheader", name="Quantity × unit price").count() == 1
    row = page.locator("table.order-lines tbody tr").inner_text()
    assert "TSF16100" in row and "1 × €60.00" in row, row
    page.get_by_role("button", name="Hide from my order history").click()
    page.wait_for_url(f"**/orders/{bought['id']}")
    assert "is hidden from your order history" in page.content()
    shoot(page, "order-hidden-owner")
    page.goto("/orders")
    assert f">{bought['number']}</a>" not in page.content()
    page.get_by_label("Only orders hidden from the customer's history").check()
    page.get_by_role("button", name="Search").click()
    assert f">{bought['number']}</a>" in page.content()
    shoot(page, "orders-only-hidden-owner")
    page.goto(f"/orders/{bought['id']}")
    page.get_by_role("button", name="Show in my order history again").click()
    assert "shows in your order history again" in page.content()


def test_support_resends_the_invoice(login: Any, shoot: Any, bought: dict[str, Any]) -> None:
    page = login("support")
    page.goto(f"/orders/{bought['id']}")
    page.get_by_role("button", name="Resend the invoice").click()
    page.wait_for_url(f"**/orders/{bought['id']}")
    assert "The invoice is queued again to" in page.content()
    shoot(page, "order-resent-support")


def test_cs_admin_fills_in_invoicing_details(login: Any, shoot: Any, dashboard: Dashboard) -> None:
    page = login("cs_admin")
    page.goto(f"/admin/companies/{dashboard.companies['card']}")
    page.fill("#address", "Damrak 1")
    page.fill("#postcode", "1012 LG")
    page.fill("#city", "Amsterdam")
    page.fill("#country", "NL")
    page.fill("#vat_number", "NL004495446B01")  # a wrong check digit
    page.get_by_role("button", name="Save the invoicing details").click()
    assert "is not a valid VAT number" in page.content()  # a 422 page: the browser logs it
    page.fill("#vat_number", "NL004495445B01")
    page.get_by_role("button", name="Save the invoicing details").click()
    page.wait_for_url("**/admin/companies/*")
    assert page.locator("#vat_number").input_value() == "NL004495445B01"
    fresh = login("cs_admin")  # the refused post's 422 stays in the first page's log
    fresh.goto(f"/admin/companies/{dashboard.companies['card']}")
    shoot(fresh, "company-invoicing-cs_admin")
    company = dashboard.call("GET", f"/companies/{dashboard.companies['card']}")
    assert company["invoicing"]["city"] == "Amsterdam"


def test_a_partner_fills_in_his_own_company_invoicing_details(
    login: Any, shoot: Any, dashboard: Dashboard
) -> None:
    page = login("partner")  # of the invoiced company
    page.goto("/profile")
    page.get_by_role("link", name="My company's invoicing details").click()
    page.wait_for_url("**/profile/company")
    page.fill("#address", "Keizersgracht 100\nSecond floor")
    page.fill("#postcode", "1015 AA")
    page.fill("#city", "Amsterdam")
    page.fill("#country", "NL")
    page.fill("#vat_number", "NL004495446B01")  # a wrong check digit
    page.get_by_role("button", name="Save the invoicing details").click()
    assert "is not a valid VAT number" in page.locator("#invoicing-error").inner_text()
    assert page.locator("#city").input_value() == "Amsterdam"  # kept to correct
    company = dashboard.call("GET", f"/companies/{dashboard.companies['invoice']}")
    assert company["invoicing"]["vat_number"] is None  # nothing stored
    page.fill("#vat_number", "NL004495445B01")
    page.get_by_role("button", name="Save the invoicing details").click()
    page.wait_for_url("**/profile/company")
    assert "Your invoicing details are saved." in page.content()
    fresh = login("partner")  # the refused post's 422 stays in the first page's log
    fresh.goto("/profile/company")
    shoot(fresh, "company-invoicing-partner")
    company = dashboard.call("GET", f"/companies/{dashboard.companies['invoice']}")
    assert company["invoicing"]["vat_number"] == "NL004495445B01"
    assert company["invoicing"]["address"] == "Keizersgracht 100\nSecond floor"
