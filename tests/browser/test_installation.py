"""The installation pages in Chromium against ``entitle cloud serve`` with real agents.

Must show 1a: an invoiced partner saves Voice Control and a real agent starts allowing
it; a card partner buys Remote Services through checkout with the sandbox card and the
agent allows it. Must show 1e: an owner sees only its own installation, and another
installation's URL answers the same "not found" page as one that does not exist. And every
page of the installation's area, as every role that may open it, screenshotted and checked
by axe-core.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Agent, Dashboard, answered


def _flash(page: Any) -> str:
    return str(page.locator(".flash").first.inner_text())


def _running_agent_says(agent: Agent, feature: str) -> dict[str, Any]:
    """The running agent's own answer, from its local query API (Unix socket; the agent's
    folder is ``data_dir/agent-<device_id>``, agent.settings.AgentSettings.agent_dir)."""
    socket = Path(agent.env["ENTITLE_DATA_DIR"]) / f"agent-{agent.device_id}" / "agent.sock"
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=10) as api:
        answer: dict[str, Any] = api.get(f"/features/{feature}").json()
    return answer


def test_invoiced_partner_saves_voice_control_and_the_agent_allows_it(
    dashboard: Dashboard, login: Any, shoot: Any
) -> None:
    inst = dashboard.new_installation("Voice Shop", integrators=("invoice",))
    agent = dashboard.start_agent(dashboard.new_device(inst))
    dashboard.wait_seen(agent.device_id)  # connected: services can be bought
    assert agent.check("voice_control") != 0

    page = login("partner")
    page.goto("/installations")
    page.get_by_role("link", name="Voice Shop").click()
    page.wait_for_url(f"**/installations/{inst}")
    assert page.get_by_role("button", name="Checkout").count() == 0
    page.get_by_role("checkbox", name=re.compile("Voice Control")).check()
    page.get_by_role("button", name="Save subscriptions").click()

    # the confirm step: what is bought, for how long, the price, who pays; nothing saved yet
    page.wait_for_url(f"**/installations/{inst}/buy?*")
    confirm = page.locator("article.confirm")
    assert "Voice Control" in confirm.inner_text() and "€36.00" in confirm.inner_text()
    assert "Invoiced to your company" in confirm.inner_text()
    assert page.locator("#card_number").count() == 0
    shoot(page, "save-subscriptions-partner")
    page.get_by_role("button", name="Save subscriptions").click()

    page.wait_for_url(f"**/installations/{inst}#subscriptions")
    assert "Subscriptions saved: Voice Control" in _flash(page)
    row = page.locator("table.subscriptions tr", has_text="Voice Control")
    assert "active, renews on" in row.inner_text()
    shoot(page, "installation-after-save-partner")
    agent.wait_allowed("voice_control")
    assert _running_agent_says(agent, "voice_control")["allowed"] is True
    assert _running_agent_says(agent, "remote_access")["allowed"] is False  # only what was bought


def test_card_partner_checks_out_remote_services_and_the_agent_allows_it(
    dashboard: Dashboard, login: Any, shoot: Any
) -> None:
    inst = dashboard.new_installation("Remote Depot", integrators=("card",))
    agent = dashboard.start_agent(dashboard.new_device(inst))
    dashboard.wait_seen(agent.device_id)  # connected: services can be bought
    assert agent.check("remote_access") != 0

    page = login("card_partner")
    page.goto(f"/installations/{inst}")
    assert page.get_by_role("button", name="Save subscriptions").count() == 0
    page.get_by_role("checkbox", name=re.compile("Remote Services")).check()
    page.get_by_role("button", name="Checkout").click()

    page.wait_for_url(f"**/installations/{inst}/buy?*")
    assert "€60.00" in page.locator("article.confirm").inner_text()
    shoot(page, "checkout-card-partner")
    # a declined card buys nothing and says so on the same page
    page.fill("#card_number", "4000 0000 0000 0002")
    page.get_by_role("button", name="Pay €60.00").click()
    assert "declined" in page.locator("[role=alert]").inner_text()
    answered(page, 402)
    shoot(page, "checkout-declined-card-partner")
    page.fill("#card_number", "4242 4242 4242 4242")
    page.get_by_role("button", name="Pay €60.00").click()

    page.wait_for_url(f"**/installations/{inst}#subscriptions")
    assert "Paid: Remote Services" in _flash(page)
    row = page.locator("table.subscriptions tr", has_text="Remote Services")
    assert "active, renews on" in row.inner_text() and "by card" in row.inner_text()
    agent.wait_allowed("remote_access")
    assert _running_agent_says(agent, "remote_access")["allowed"] is True


def test_owner_sees_only_its_installation(dashboard: Dashboard, login: Any, shoot: Any) -> None:
    page = login("owner")
    page.goto("/installations")
    names = page.locator("table a").all_inner_texts()
    assert "Harbour Office" in names and "Villa Dune" not in names
    shoot(page, "installations-owner")

    other = page.goto(f"/installations/{dashboard.installations['Villa Dune']}")
    assert other is not None and other.status == 404
    answered(page, 404)
    other_main = page.locator("main").inner_html()
    assert "Villa Dune" not in page.content()
    shoot(page, "installation-not-found-owner")
    missing = page.goto("/installations/inst_0000000000000000")
    assert missing is not None and missing.status == 404
    answered(page, 404)
    assert page.locator("main").inner_html() == other_main  # the same page, word for word

    page.goto(f"/installations/{dashboard.installations['Harbour Office']}")
    assert page.locator("h1").inner_text() == "Harbour Office"
    assert page.get_by_role("button", name="Checkout").count() == 1  # owners pay by card


@pytest.fixture(scope="module")
def walk(dashboard: Dashboard) -> tuple[str, dict[str, Any]]:
    """An installation with a gateway, two cameras and three subscriptions of different
    states (one renews, one expires, video retention), owned by ``owner``, integrated by
    both partner companies, and one failed renewal charge to follow up."""
    inst = dashboard.new_installation(
        "Lighthouse Café", owner="owner", integrators=("invoice", "card")
    )
    dashboard.connect(inst)  # its gateway has reported: services can be bought
    for _ in range(2):
        dashboard.new_device(inst, "camera")
    partner = dashboard.users["partner"]["id"]
    subs = {}
    for product in ("TSF12125", "TSF16100", "VR-1080P-30D"):
        bought = dashboard.call(
            "POST",
            "/subscriptions",
            json={
                "installation_id": inst,
                "product": product,
                "pay_with": "invoice",
                "purchaser_id": partner,
            },
        )
        subs[product] = bought["subscription"]
    dashboard.call("POST", f"/subscriptions/{subs['TSF16100']['id']}/deactivate")
    # a renewal paid with a declined card: a failed charge for the partners to follow up
    declined = dashboard.api.post(
        f"/api/v1/subscriptions/{subs['TSF12125']['id']}/renew",
        json={"months": 1, "pay_with": "card", "card_token": "4000000000000002"},
    )
    assert declined.status_code == 402, declined.text
    return inst, subs


@pytest.mark.parametrize(
    "who", ["admin", "cs_admin", "support", "partner", "card_partner", "owner"]
)
def test_every_role_sees_the_installation_pages(
    who: str, walk: tuple[str, dict[str, Any]], login: Any, shoot: Any
) -> None:
    inst, _ = walk
    page = login(who)
    page.goto("/installations")
    assert "Lighthouse Café" in page.locator("table").inner_text()
    shoot(page, f"installations-{who}")
    page.goto(f"/installations/{inst}")
    assert page.locator("h1").inner_text() == "Lighthouse Café"
    assert page.locator("table.subscriptions tbody tr").count() == 3
    writes = who in ("admin", "partner", "card_partner", "owner")
    assert (page.get_by_role("heading", name="Buy a service").count() == 1) is writes
    assert (page.get_by_role("link", name="Turn auto-renew on").count() == 1) is writes
    assert page.locator("#purchases tbody tr").count() == 4  # 3 purchases, 1 failed renewal
    shoot(page, f"installation-{who}")


@pytest.mark.parametrize("who", ["partner", "card_partner", "support"])
def test_follow_up_lists_the_failed_charge(
    who: str, walk: tuple[str, dict[str, Any]], login: Any, shoot: Any
) -> None:
    page = login(who)
    page.goto("/follow-up")
    failed = page.locator("section", has=page.locator("#failed-title"))
    assert "Lighthouse Café" in failed.inner_text() and "€3.00" in failed.inner_text()
    shoot(page, f"follow-up-{who}")


def test_confirm_steps_say_what_happens(
    walk: tuple[str, dict[str, Any]], login: Any, shoot: Any
) -> None:
    """As a card partner who is not the purchaser."""
    inst, subs = walk
    voice = subs["TSF12125"]["id"]
    page = login("card_partner")
    page.goto(f"/installations/{inst}")
    page.get_by_role("link", name="Turn auto-renew on").click()
    text = page.locator("article.confirm").inner_text()
    assert "You become the purchaser of Remote Services" in text
    assert "Nothing is due now." in text and "€60.00 for 12 months, charged on" in text
    shoot(page, "auto-renew-on-card-partner")
    page.goto(f"/subscriptions/{voice}/auto-renew?turn=off")
    assert "then stops" in page.locator("article.confirm").inner_text()
    shoot(page, "auto-renew-off-card-partner")
    page.goto(f"/installations/{inst}")
    page.locator(f"#months-{voice}").fill("3")
    page.locator("form.renew-form", has=page.locator(f"#months-{voice}")).get_by_role(
        "button"
    ).click()
    page.wait_for_url(f"**/subscriptions/{voice}/renew?months=3")
    assert "€9.00" in page.locator("article.confirm").inner_text()
    shoot(page, "renew-card-partner")
    page.goto(f"/installations/{inst}/buy?product=TSF16101&app_term=36")
    shoot(page, "checkout-app-access-card-partner")


def test_on_a_phone_and_in_dutch(
    walk: tuple[str, dict[str, Any]], dashboard: Dashboard, login: Any, shoot: Any
) -> None:
    inst, subs = walk
    # on a phone the installation page still reads (the subscriptions become cards)
    page = login("partner", phone=True)
    page.goto(f"/installations/{inst}")
    shoot(page, "installation-partner-phone")
    page = login("owner")
    page.context.add_cookies([{"name": "entitle_lang", "value": "nl", "url": dashboard.url}])
    page.goto(f"/installations/{inst}")
    assert page.get_by_role("heading", name="Abonnementen").count() == 1
    shoot(page, "installation-owner-nl")
    page.goto(f"/subscriptions/{subs['TSF16100']['id']}/auto-renew?turn=on")
    assert "U wordt de koper" in page.locator("article.confirm").inner_text()
    shoot(page, "auto-renew-on-owner-nl")
