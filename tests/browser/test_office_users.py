"""Office users (AKV-OFFICE-USER, one subscription per user or department) in Chromium: an
invoiced partner opens the installation's office users page from the installation page,
is told the installation is not connected until its gateway reports,
adds two users at once through the confirm step, ends one at the end of its month, and the
page shows each one's status and the count "2 of 60"; on a desktop and on a phone."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Dashboard


def test_add_two_office_users_and_end_one(dashboard: Dashboard, login: Any, shoot: Any) -> None:
    inst = dashboard.new_installation("Harbour Office Tower", integrators=("invoice",))
    page = login("partner")
    page.goto(f"/installations/{inst}")
    # nothing has reported yet: the page says so before anyone tries to buy
    notice = page.locator("#not-connected")
    assert "is not connected" in notice.inner_text()
    notice.scroll_into_view_if_needed()
    shoot(page, "installation-not-connected")
    dashboard.connect(inst)  # its gateway has reported: users can be bought
    page.reload()
    assert page.locator("#not-connected").count() == 0
    assert "0 of 60" in page.locator("#office-users-summary").inner_text()
    shoot(page, "office-users-installation")
    page.get_by_role("link", name="Office users and departments").click()
    page.wait_for_url(f"**/installations/{inst}/office-users")

    page.get_by_label("Users or departments, one a line").fill("Sales\nReception")
    page.get_by_role("button", name="Save subscriptions").click()
    page.wait_for_url(f"**/installations/{inst}/buy?*")
    confirm = page.locator("article.confirm").inner_text()
    assert "user Sales" in confirm and "user Reception" in confirm and "€3.00" in confirm
    page.get_by_role("button", name="Save subscriptions").click()
    page.wait_for_url(f"**/installations/{inst}/office-users")
    assert "Subscriptions saved" in page.locator(".flash").first.inner_text()

    sales = page.locator('tr[data-user="Sales"]')
    sales.get_by_role("button", name="End at period end…").click()
    page.wait_for_url("**/auto-renew?turn=off*")
    assert "Sales" in page.locator("hgroup").inner_text()
    shoot(page, "office-users-end-confirm")
    page.get_by_role("button", name="Turn auto-renew off").click()
    page.wait_for_url(f"**/installations/{inst}/office-users")
    assert "Auto-renew is off" in page.locator(".flash").first.inner_text()

    sales = page.locator('tr[data-user="Sales"]')
    reception = page.locator('tr[data-user="Reception"]')
    assert "ends at period end" in sales.inner_text()
    assert sales.get_by_role("button", name="Keep it renewing…").count() == 1
    assert "active, renews" in reception.inner_text()
    assert "2 of 60" in page.locator(".office-count").inner_text()
    shoot(page, "office-users-partner")

    phone = login("partner", phone=True)
    phone.goto(f"/installations/{inst}/office-users")
    assert "ends at period end" in phone.locator('tr[data-user="Sales"]').inner_text()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
    shoot(phone, "office-users-partner-phone")
