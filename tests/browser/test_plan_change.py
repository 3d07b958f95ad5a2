"""A camera's plan changed in the dashboard (real Chromium): the installation page names
the camera a plan is for and offers "Change plan…"; the confirm step shows the days left,
both plans' daily values and the prorated price; confirming changes the plan."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import Dashboard


def test_a_camera_plan_is_changed_after_a_confirm_step(
    dashboard: Dashboard, login: Any, shoot: Any
) -> None:
    inst = dashboard.new_installation("Harbour Camera Site", integrators=("invoice",))
    dashboard.connect(inst)  # its gateway has reported: plans can be bought
    cam = dashboard.new_device(inst, "camera")["device_id"]
    bought = dashboard.call(
        "POST",
        "/subscriptions",
        json={
            "installation_id": inst,
            "product": "VR-720P-07D",
            "device_id": cam,
            "pay_with": "invoice",
            "purchaser_id": dashboard.users["partner"]["id"],
        },
    )
    sub = bought["subscription"]["id"]
    page = login("partner")
    page.goto(f"/installations/{inst}")
    row = page.locator("table.subscriptions tbody tr")
    assert cam in row.inner_text()
    page.get_by_role("link", name="Change plan…").click()
    page.get_by_label("New plan").select_option("VR-4K-30D")
    page.get_by_role("button", name="Show the price").click()
    confirm = page.locator("article.confirm").inner_text()
    assert "days left of the term" in confirm and "Due now" in confirm
    assert "3.29 cents" in confirm and "39.45 cents" in confirm
    shoot(page, "plan-change-confirm")
    page.get_by_role("button", name="Change the plan").click()
    page.wait_for_url(f"**/installations/{inst}*")
    assert "The plan is now" in page.content()
    after = dashboard.call("GET", f"/subscriptions/{sub}")
    assert after["product"] == "VR-4K-30D"
    shoot(page, "plan-change-done")
