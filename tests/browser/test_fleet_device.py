"""The fleet overview and the device page in a real browser (issue 15, must-show 1c).

An operator (admin) runs a remote self-test from the device page of a real
agent (``entitle agent run`` with its firmware emulator, connected to the
test Mosquitto) and sees the result appear without the page reloading: the
command's fragment polls itself (htmx, every second) until the agent's answer
is stored. Every role that may open these pages visits them, with a screenshot
and axe-core.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import Agent, Dashboard
from tests.waiting import HANG_S


def wait_reporting(dashboard: Dashboard, agent: Agent) -> None:
    """Until the cloud has the agent online and holds a health report of it."""
    deadline = time.monotonic() + HANG_S
    while True:
        assert agent.process.poll() is None, agent.log.read_text(errors="replace")[-3000:]
        health = dashboard.call("GET", f"/devices/{agent.device_id}/health")
        if health["online"] and health["latest"] is not None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{agent.device_id} never reported: {health}")
        time.sleep(0.2)


@pytest.fixture
def reporting_agent(dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> Agent:
    """A real gateway agent with its firmware emulator, reporting health every 2 s."""
    monkeypatch.setenv("ENTITLE_FIRMWARE_KIND", "gateway")
    monkeypatch.setenv("ENTITLE_HEALTH_INTERVAL_S", "2")
    installation_id = dashboard.installations.get("Harbour Office") or ""
    device = dashboard.new_device(installation_id, "gateway")
    agent = dashboard.start_agent(device)
    wait_reporting(dashboard, agent)
    return agent


def test_an_operator_runs_a_self_test_and_sees_the_result_without_reloading(
    dashboard: Dashboard, reporting_agent: Agent, login: Any, shoot: Any
) -> None:
    device_id = reporting_agent.device_id
    page = login("admin")
    page.goto(f"/devices/{device_id}")
    page.wait_for_selector("#charts[data-loaded=true]")
    shoot(page, "device-admin")
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
    started = time.monotonic()
    page.click("button[data-command=self_test]")
    pending = page.locator("#command-list article.command").first
    pending.wait_for()
    answered = page.locator("#command-list article[data-command-status=answered]").first
    answered.wait_for(timeout=HANG_S * 1000)
    seen_after = time.monotonic() - started
    text = answered.inner_text()
    assert "Self-test passed" in text or "Self-test failed" in text, text
    assert page.evaluate("window.sameDocument") is True
    # the same result through the API: the page showed what the agent answered
    commands = dashboard.call("GET", f"/devices/{device_id}/health")
    assert commands["device_id"] == device_id
    print(f"self-test result on the page {seen_after:.2f} s after the click (htmx polling, 1 s)")
    shoot(page, "device-admin-self-test")


def test_staff_read_the_fleet_and_every_reader_the_device_page(
    dashboard: Dashboard, reporting_agent: Agent, login: Any, shoot: Any
) -> None:
    device_id = reporting_agent.device_id
    for role in ("admin", "cs_admin", "support"):
        page = login(role)
        page.goto("/fleet")
        assert page.locator(f"a[href='/devices/{device_id}']").count() == 1
        shoot(page, f"fleet-{role}")
        page.fill("input[name=q]", device_id)
        page.press("input[name=q]", "Enter")
        page.wait_for_url(lambda url: "q=" in url)
        assert page.locator("table.fleet-table tbody tr").count() == 1
        if role == "support":
            page.goto(f"/devices/{device_id}")
            page.wait_for_selector("#charts[data-loaded=true]")
            assert page.locator("button[data-command=reboot]").count() == 1
            shoot(page, "device-support")
    phone = login("admin", phone=True)
    phone.goto("/fleet")
    shoot(phone, "fleet-admin-phone")
    phone.goto(f"/devices/{device_id}")
    phone.wait_for_selector("#charts[data-loaded=true]")
    shoot(phone, "device-admin-phone")
    for role in ("partner", "owner"):  # Harbour Office's integrator and owner: no commands
        page = login(role)
        page.goto(f"/devices/{device_id}")
        page.wait_for_selector("#charts[data-loaded=true]")
        assert page.locator("button[data-command]").count() == 0
        shoot(page, f"device-{role}")
        assert page.goto("/fleet").status == 403
    other = login("other_owner")
    assert other.goto(f"/devices/{device_id}").status == 404
