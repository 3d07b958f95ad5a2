"""Checkout for several installations in Chromium, on `entitle cloud serve`: a card partner
ticks a service on two installations (a third, not connected, cannot be ticked), pays
once, and lands on the one order, whose one table lists each line with its installation;
a partner of only one of them sees the order with that line and a note of the others
(screenshots, axe-checked)."""

from __future__ import annotations

from typing import Any

from cloud.billing.payments import CARD_OK
from tests.browser.conftest import Dashboard


def test_a_card_partner_buys_for_two_installations_in_one_checkout(
    login: Any, dashboard: Dashboard, shoot: Any
) -> None:
    # the invoiced company integrates Dock South too (only that one)
    installs = [
        dashboard.new_installation("Dock North", integrators=("card",)),
        dashboard.new_installation("Dock South", integrators=("card", "invoice")),
    ]
    for inst in installs:
        dashboard.connect(inst)
    # nothing of it has reported: shown, but nothing can be ticked for it
    silent = dashboard.new_installation("Dock West (not online yet)", integrators=("card",))
    page = login("card_partner")
    page.goto("/checkout")
    assert "Not connected" in page.locator(f"#not-connected-{silent}").inner_text()
    assert page.locator(f"#item-{silent}-TSF16100").is_disabled()
    for inst in installs:
        page.check(f"#item-{inst}-TSF16100")
    page.fill("#checkout-card", CARD_OK)
    shoot(page, "checkout-several-installations")
    page.click("text=Buy the ticked services")
    page.wait_for_url("**/orders/*")
    assert "Bought 2 services in one order." in page.locator(".flash").inner_text()
    # one table, a row per line: its installation (name and id) and its amount
    rows = page.locator("table.order-lines tbody tr")
    assert rows.count() == 2
    texts = [rows.nth(i).inner_text() for i in range(2)]
    for name, inst in zip(("Dock North", "Dock South"), installs, strict=True):
        [row] = [text for text in texts if name in text]  # its own row, in whatever order
        assert inst in row and "TSF16100" in row and "€60.00" in row, row
    shoot(page, "order-lines-per-installation")
    # the other company's partner sees the order, only the Dock South line, and a note
    order_url = page.url
    other = login("partner")
    other.goto(order_url)
    rows = other.locator("table.order-lines tbody tr")
    assert rows.count() == 1 and "Dock South" in rows.inner_text()
    assert "Dock North" not in other.content() and installs[0] not in other.content()
    assert "Lines for installations you cannot see: 1" in other.content()
    assert "€120.00" in other.locator("table.order-lines tfoot").inner_text()  # the total
    # hiding acts on the whole order: not offered to who sees part of it
    assert other.get_by_role("button", name="Hide from my order history").count() == 0
    shoot(other, "order-part-seen-by-another-partner")
