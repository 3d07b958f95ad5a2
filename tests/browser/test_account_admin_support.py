"""Everyone's, the admins' and the support desk's pages in Chromium, on `entitle cloud serve`.

Must show 1f: a forgotten password's link arrives at the SMTP server (the cloud's outbox
sends it), sets a new password once, and refuses a second use. Then: my profile as every
role, administration as the roles that may open it (and the 403 page for one that may
not), and the support desk with a real agent's self-test on a ticket.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, ROLES, Dashboard
from tests.browser.test_fleet_device import wait_reporting
from tests.waiting import HANG_S

_LINK = re.compile(r"https?://\S+/password/reset/[A-Za-z0-9_-]+")


def _mail_to(dashboard: Dashboard, address: str) -> EmailMessage:
    """The first mail the SMTP server received for ``address`` (the outbox sends it)."""
    deadline = time.monotonic() + HANG_S
    while True:
        for mail in dashboard.smtp.messages:
            if mail["To"] == address:
                return mail
        if time.monotonic() > deadline:
            raise AssertionError(f"no mail to {address} within {HANG_S} s")
        time.sleep(0.1)


def test_forgotten_password_link_works_once(browser: Any, dashboard: Dashboard, shoot: Any) -> None:
    """Must show 1f."""
    user = dashboard.new_user("forgetful", "owner")
    context = browser.new_context(base_url=dashboard.url, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto("/login")
        page.click("text=Forgot your password?")
        page.wait_for_url("**/password/forgot")
        shoot(page, "password-forgot-anonymous")
        page.fill("#email", user["email"])
        page.click("button[type=submit]")
        page.wait_for_url("**/login")
        assert "a link to set a new password is on its way" in page.locator(".flash").inner_text()

        mail = _mail_to(dashboard, user["email"])
        body = mail.get_body(("plain",))
        assert body is not None
        link = _LINK.search(body.get_content())
        assert link is not None and link.group(0).startswith(dashboard.url)

        page.goto(link.group(0))
        shoot(page, "password-reset-anonymous")
        page.fill("#password", "a new passphrase for me")
        page.fill("#repeat", "a new passphrase for me")
        page.click("button[type=submit]")
        page.wait_for_url("**/login")
        assert "Your new password is set" in page.locator(".flash").inner_text()

        second = page.goto(link.group(0))
        assert second is not None and second.status == 410
        assert page.locator("h1").inner_text() == "This link no longer works"
        shoot(page, "password-link-used-anonymous")

        page.goto("/login")
        page.fill("#email", user["email"])
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").inner_text() == "Wrong e-mail address or password."
        page.fill("#password", "a new passphrase for me")
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
    finally:
        context.close()


def test_my_profile_as_every_role(login: Any, shoot: Any) -> None:
    for who in ROLES:
        page = login(who)
        page.goto("/profile")
        assert page.locator("h1").inner_text() == "My profile"
        shoot(page, f"profile-{who}")
    phone = login("owner", phone=True)
    phone.goto("/profile")
    shoot(phone, "profile-owner-phone")


def test_administration_as_the_roles_that_may(login: Any, dashboard: Dashboard, shoot: Any) -> None:
    admin = login("admin")
    admin.goto("/admin")
    shoot(admin, "admin-admin")
    admin.goto("/admin/users")
    shoot(admin, "admin-users-admin")
    admin.click(f"text={dashboard.email('partner')}")
    admin.fill("#key-name", "nightly export")
    admin.click("text=Make an API key")
    key = admin.locator("code.secret").inner_text()
    assert key.startswith("ek_")
    shoot(admin, "admin-user-new-key-admin")
    admin.goto(admin.url.removesuffix("/api-keys"))
    assert admin.locator("code.secret").count() == 0  # shown once
    assert admin.locator(f"text={key[:11]}").count() == 1  # then only its prefix
    admin.goto("/admin/companies")
    shoot(admin, "admin-companies-admin")
    admin.click("text=Kaart Installaties")
    shoot(admin, "admin-company-admin")
    admin.goto("/admin/api-keys")
    shoot(admin, "admin-api-keys-admin")
    admin.goto("/admin/keys")
    shoot(admin, "admin-keys-admin")
    version = int(admin.locator(".facts dd").first.inner_text())
    admin.click("text=Rotate the token key…")
    shoot(admin, "admin-keys-rotate-admin")
    admin.click("text=Rotate now")
    admin.wait_for_url("**/admin/keys")
    assert int(admin.locator(".facts dd").first.inner_text()) == version + 1
    admin.goto("/admin/audit?action=user.create")
    shoot(admin, "admin-audit-admin")

    cs = login("cs_admin", phone=True)
    for path, name in [
        ("/admin", "admin"),
        ("/admin/users", "admin-users"),
        ("/admin/companies", "admin-companies"),
        ("/admin/api-keys", "admin-api-keys"),
        ("/admin/audit", "admin-audit"),
    ]:
        cs.goto(path)
        shoot(cs, f"{name}-cs_admin-phone")
    cs.goto("/admin/users")
    cs.click(f"text={dashboard.email('admin')}")
    assert cs.locator("text=Only an administrator changes").count() == 1
    shoot(cs, "admin-user-of-an-admin-cs_admin-phone")
    refused = cs.goto("/admin/keys")
    assert refused is not None and refused.status == 403

    support = login("support")
    refused = support.goto("/admin/users")
    assert refused is not None and refused.status == 403
    assert "admin" not in support.locator("nav").inner_text().lower()  # no Admin link either


def test_support_desk_with_a_real_self_test(
    login: Any, dashboard: Dashboard, shoot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTITLE_FIRMWARE_KIND", "gateway")
    monkeypatch.setenv("ENTITLE_HEALTH_INTERVAL_S", "2")
    device = dashboard.new_device(dashboard.installations["Harbour Office"], kind="gateway")
    agent = dashboard.start_agent(device)
    device_id = str(device["device_id"])

    owner = login("owner")
    owner.goto(f"/tickets/new?device={device_id}")
    assert owner.locator("#devices").input_value() == device_id
    shoot(owner, "ticket-new-owner")
    owner.fill("#subject", "The gateway in the hall drops its link")
    owner.fill("#body", "Since this morning the app says offline every few minutes.")
    owner.fill("#cc", "facility@customer.example")
    owner.click("text=Open the ticket")
    owner.wait_for_url(re.compile(r".*/tickets/\d+$"))
    ticket_url = owner.url
    assert "No self-test of the device has answered" in owner.locator(".rma-refused").inner_text()
    shoot(owner, "ticket-owner")
    owner.goto("/tickets")
    shoot(owner, "tickets-board-owner")

    # a real round trip: the agent runs its firmware's self-test and answers
    wait_reporting(dashboard, agent)
    command = dashboard.call("POST", f"/devices/{device_id}/commands", json={"cmd": "self_test"})
    deadline = time.monotonic() + HANG_S
    while dashboard.call("GET", f"/devices/{device_id}/commands/{command['id']}")["status"] == (
        "pending"
    ):
        assert time.monotonic() < deadline, "the agent never answered the self-test"
        time.sleep(0.2)

    support = login("support")
    support.goto("/tickets")
    shoot(support, "tickets-board-support")
    support.goto("/tickets?stage=first_line")  # one stage alone, with its pages
    assert support.locator("#col-second_line").count() == 0
    shoot(support, "tickets-column-support")
    support.goto(ticket_url)
    assert support.locator("text=passed").count() >= 1  # the self-test's row
    assert support.locator("text=Approve the RMA").count() == 0  # support never approves
    shoot(support, "ticket-support")

    cs = login("cs_admin")
    cs.goto(ticket_url)
    refused = cs.locator(".rma-refused").inner_text()
    assert "the hardware is fine, so no RMA" in refused  # the emulator's self-test passes
    assert cs.locator("text=Approve the RMA").count() == 0
    shoot(cs, "ticket-cs_admin")
    cs.fill("#body", "The self-test passed: please check the network cable of the gateway.")
    cs.click("text=Send")
    cs.wait_for_url(ticket_url)
    assert "Your message is added." in cs.locator(".flash").inner_text()
    cs_phone = login("cs_admin", phone=True)
    cs_phone.goto("/tickets")
    shoot(cs_phone, "tickets-board-cs_admin-phone")

    for who in ("admin", "partner", "card_partner"):
        page = login(who)
        page.goto("/tickets")
        assert page.locator(f"a[href='{ticket_url.removeprefix(dashboard.url)}']").count() == 1
        shoot(page, f"tickets-board-{who}")
        page.goto(ticket_url)
        shoot(page, f"ticket-{who}")
    dutch = login("partner")
    dutch.goto("/profile")
    dutch.select_option("#locale", "nl")
    dutch.click("form[action='/profile'] button[type=submit]")
    dutch.wait_for_url("**/profile")
    dutch.goto(ticket_url)
    assert dutch.locator("h2", has_text="Apparaten").count() == 1
    shoot(dutch, "ticket-partner-nl")
    dutch.goto("/profile")  # back to English: other tests read this user's pages
    dutch.select_option("#locale", "en")
    dutch.click("form[action='/profile'] button[type=submit]")
    dutch.wait_for_url("**/profile")
    assert dutch.locator("h1").inner_text() == "My profile"

    other = login("other_owner")
    hidden = other.goto(ticket_url)
    assert hidden is not None and hidden.status == 404
