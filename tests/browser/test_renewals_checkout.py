"""Checkout for several installations in Chromium, on `entitle cloud serve`: a card partner
ticks a service on two installations, pays once, and lands on the one order, whose one
table lists each line with its installation (screenshots, axe-checked)."""

from __future__ import annotations

from typing import Any

from cloud.billing.payments import CARD_OK
from tests.browser.conftest import Dashboard


def test_a_card_partner_buys_for_two_installations_in_one_checkout(
    login: Any, dashboard: Dashboard, shoot: Any
) -> None:
    installs = [
        dashboard.new_installation(name, integrators=("card",))
        for name in ("Dock North", "Dock South")
    ]
    page = login("card_partner")
    page.goto("/checkout")
    for inst in installs:
        page.check(f"#item-{inst}-TSF16100")
    page.fill("#checkout-card", CARD_OK)
    shoot(page, "checkout-several-installations")
    page.click("text=Buy the ticked services")
    page.wait_for_url("**/orders/*")
    assert "Bought 2 services in one order." in page.locator(".flash").inner_text()
    # one table, a row per line: its installation (name and id) and its amount
    rows = page.locator("table.order-lines tbody tr")
    assert rows.count() == 2 and page.locator("text=Lines per installation").count() == 0
    for i, (name, inst) in enumerate(zip(("Dock North", "Dock South"), installs, strict=True)):
        row = rows.nth(i).inner_text()
        assert name in row and inst in row and "TSF16100" in row and "€60.00" in row, row
    shoot(page, "order-lines-per-installation")
