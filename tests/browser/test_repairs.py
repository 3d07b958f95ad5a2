"""Repairs in a real browser (issue 17, must show 2), reading every mail from the SMTP server.

- In warranty: a real agent whose firmware emulator has a hardware fault (``--fault
  overheating``) answers a remote self-test; a customer-service admin approves the RMA on
  the ticket page and requests the repair from there (a replacement, approved at once);
  the admin ships the replacement (naming its serial), the owner reads its tracking number
  and serial, records the old device's parcel and downloads its packing slip (a PDF naming
  the device and the repair); the admin marks the old device received and closes it.
- Out of warranty: a second cloud whose warranty term is 0 months (every device is out
  of warranty): the owner requests a repair, the admin quotes it, the owner accepts and
  pays it with the sandbox card (a declined card first: 402, nothing paid), the admin
  marks the device received and repaired and ships it back, the owner sees the tracking
  number, the admin closes it. The order is in billing, paid.

Each step's mail reaches the owner through the outbox; each page is screenshotted and
checked by axe-core (``shoot``).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from cloud.billing.payments import CARD_DECLINED, CARD_OK
from tests.browser.conftest import CHROMIUM, ROOT, Dashboard, answered, serve_cloud, sign_in
from tests.browser.test_fleet_device import wait_reporting
from tests.smtp_fixtures import SmtpServer
from tests.waiting import HANG_S

_ = CHROMIUM  # the harness skips without Chromium (dashboard fixture)


def mail(smtp: SmtpServer, address: str, subject_part: str) -> EmailMessage:
    """The mail to ``address`` whose subject holds ``subject_part`` (sent by the outbox)."""
    deadline = time.monotonic() + HANG_S
    while True:
        for message in smtp.messages:
            if address in str(message["To"]) and subject_part in str(message["Subject"]):
                return message
        if time.monotonic() > deadline:
            seen = [(m["To"], m["Subject"]) for m in smtp.messages][-10:]
            raise AssertionError(f"no mail to {address} about {subject_part!r}: {seen}")
        time.sleep(0.1)


def body(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def submit(page: Any, form: str) -> None:
    """Submit the form whose action ends with ``form`` and wait for the page it leads to."""
    with page.expect_navigation():
        page.locator(f"form[action$='{form}'] button[type=submit]").first.click()


# in warranty ---------------------------------------------------------------------------
@pytest.fixture
def faulty_agent(dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real gateway agent on a firmware emulator with a hardware fault (fan failure)."""
    firmware = subprocess.Popen(
        [sys.executable, "-m", "firmware_stubs", "--kind", "gateway", "--fault", "overheating"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert firmware.stdout is not None
        port = firmware.stdout.readline().decode().strip()
        assert port.startswith("/dev/"), port
        monkeypatch.setenv("ENTITLE_SERIAL_PORT", port)
        monkeypatch.setenv("ENTITLE_FIRMWARE_KIND", "gateway")
        monkeypatch.setenv("ENTITLE_HEALTH_INTERVAL_S", "2")
        dashboard.new_user("workshop_owner", "owner")
        installation = dashboard.new_installation("Werkplaats Oost", owner="workshop_owner")
        agent = dashboard.start_agent(dashboard.new_device(installation, "gateway"))
        wait_reporting(dashboard, agent)
        yield agent
    finally:
        firmware.terminate()
        firmware.wait(20)


def _self_test_answered(dashboard: Dashboard, device_id: str, command_id: str) -> None:
    deadline = time.monotonic() + HANG_S
    while True:
        command = dashboard.call("GET", f"/devices/{device_id}/commands/{command_id}")
        if command["status"] == "answered":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the self-test was never answered: {command}")
        time.sleep(0.2)


def test_rma_approved_replacement_shipped_old_device_returned_closed(
    dashboard: Dashboard, faulty_agent: Any, login: Any, shoot: Any
) -> None:
    device_id = faulty_agent.device_id
    owner_email = dashboard.email("workshop_owner")
    installation = dashboard.installations["Werkplaats Oost"]
    ticket = dashboard.call(
        "POST",
        "/tickets",
        json={
            "category": "device_fault",
            "subject": "Gateway overheats",
            "body": "it switches itself off",
            "installation_id": installation,
            "device_ids": [device_id],
        },
    )
    sent = dashboard.call("POST", f"/devices/{device_id}/commands", json={"cmd": "self_test"})
    _self_test_answered(dashboard, device_id, sent["id"])

    cs = login("cs_admin")
    cs.goto(f"/tickets/{ticket['id']}")
    submit(cs, f"/tickets/{ticket['id']}/rma")
    assert "is approved" in cs.locator(".flash").inner_text()
    cs.click(f"text=Request the repair of {device_id}")
    cs.fill("#problem", "Fan failure: the self-test reports overheating.")
    cs.fill("#ship_to", "Werkplaats Oost\nHavenstraat 4\n1013 AB Amsterdam")
    shoot(cs, "repair-request")
    submit(cs, "/repairs/new")
    assert "In warranty: replacement" in cs.content()
    assert "Replacement approved" in cs.locator(".heading-row").inner_text()
    repair_url = cs.url
    number = cs.locator("h1").inner_text().split()[-1]
    assert "replacement approved" in mail(dashboard.smtp, owner_email, number)["Subject"]

    admin = login("admin")
    admin.goto(repair_url)
    admin.select_option("#kind", "replacement")
    admin.fill("#carrier", "DHL")
    admin.fill("#tracking", "JD014600006281230")
    admin.fill("#serial", "GW-REPL-0042")
    submit(admin, "/shipments")
    shipped = mail(dashboard.smtp, owner_email, "replacement shipped")
    assert "JD014600006281230" in body(shipped) and repair_url in body(shipped)
    assert "serial GW-REPL-0042" in body(shipped)
    shoot(admin, "repair-replacement-shipped-admin")

    owner = login("workshop_owner")
    owner.goto(f"/devices/{device_id}")
    assert owner.locator(f"a[href='/repairs?device={device_id}']").count() == 1
    owner.goto("/repairs")
    shoot(owner, "repairs-list-owner")
    owner.click(f"text={number}")
    shipments = owner.locator("#shipments-heading + .table-wrap").inner_text()
    assert "JD014600006281230" in shipments and "GW-REPL-0042" in shipments
    assert owner.locator("form[action$='/steps']").count() == 0  # the centre's steps only
    owner.select_option("#kind", "inbound")
    owner.fill("#carrier", "PostNL")
    owner.fill("#tracking", "3SABCD1234567")
    submit(owner, "/shipments")
    with owner.expect_download() as download:
        owner.locator("a[href$='slip.pdf']").last.click()
    text = "".join(
        p.extract_text()
        for p in PdfReader(io.BytesIO(Path(download.value.path()).read_bytes())).pages
    )
    assert device_id in text and number in text and "3SABCD1234567" in text
    assert "RETURN TO REPAIR CENTRE" in text
    shoot(owner, "repair-owner-tracking")

    admin.goto(repair_url)
    submit(admin, "/steps")  # the one step now: the old device is received
    mail(dashboard.smtp, owner_email, "device received")
    admin.locator("form[action$='/steps'] button").click()
    admin.wait_for_load_state("load")
    assert "Closed" in admin.locator(".heading-row").inner_text()
    closed = mail(dashboard.smtp, owner_email, "closed")
    assert device_id in body(closed)
    steps = admin.locator(".repair-timeline").inner_text()
    for seen in ("Repair requested", "Replacement shipped", "Old device sent in", "Close"):
        assert seen in steps
    shoot(admin, "repair-closed-admin")


# out of warranty ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Paid:
    """A second cloud whose warranty term is 0 months, seeded with an admin and an owner
    with an installation and a camera."""

    board: Dashboard
    device_id: str


@pytest.fixture(scope="module")
def paid_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Paid]:
    root = tmp_path_factory.mktemp("paid-cloud")
    with serve_cloud(root, ENTITLE_REPAIR_WARRANTY_MONTHS="0") as board:
        board.new_user("admin", "admin")
        board.new_user("owner", "owner")
        installation = board.new_installation("Café Zuid", owner="owner")
        yield _Paid(board, str(board.new_device(installation, "camera")["device_id"]))


def test_out_of_warranty_quote_payment_repair_return(
    browser: Any, paid_cloud: _Paid, shoot: Any
) -> None:
    cloud = paid_cloud.board
    owner_email = cloud.email("owner")
    owner = sign_in(browser, cloud, "owner")
    owner.goto(f"/repairs/new?device={paid_cloud.device_id}")
    owner.fill("#problem", "The lens is cracked.")
    owner.fill("#ship_to", "Café Zuid\nZuidplein 9\n3083 CW Rotterdam")
    submit(owner, "/repairs/new")
    assert "Out of warranty: paid repair" in owner.content()
    repair_url = owner.url
    number = owner.locator("h1").inner_text().split()[-1]
    mail(cloud.smtp, owner_email, f"{number} of {paid_cloud.device_id}: requested")
    shoot(owner, "repair-paid-requested-owner")

    admin = sign_in(browser, cloud, "admin")
    admin.goto(repair_url)
    admin.fill("#amount", "149.00")
    admin.fill("#description", "New lens and housing")
    shoot(admin, "repair-paid-quote-admin")
    submit(admin, "/quote")
    quote = mail(cloud.smtp, owner_email, "quote")
    assert "149.00 EUR" in body(quote)

    owner.goto(repair_url)
    assert "Accept and pay" in owner.content()
    owner.fill("#card_number", CARD_DECLINED)
    submit(owner, "/accept")
    assert "declined" in owner.locator(".flash").inner_text()
    assert "Quoted" in owner.locator(".heading-row").inner_text()  # nothing paid
    owner.fill("#card_number", CARD_OK)
    submit(owner, "/accept")
    assert "the repair is paid" in owner.locator(".flash").inner_text()
    assert "Succeed" in owner.content()
    mail(cloud.smtp, owner_email, ": paid")
    shoot(owner, "repair-paid-owner")
    repair = cloud.call("GET", f"/repairs/{repair_url.rsplit('/', 1)[1]}")
    order = cloud.call("GET", f"/orders/{repair['order_id']}")
    assert order["status"] == "Succeed" and order["amount_cents"] == 14900

    admin.goto(repair_url)
    submit(admin, "/steps")  # received
    mail(cloud.smtp, owner_email, "device received")
    submit(admin, "/steps")  # repaired
    mail(cloud.smtp, owner_email, ": repaired")
    admin.select_option("#kind", "return")
    admin.fill("#carrier", "UPS")
    admin.fill("#tracking", "1Z999AA10123456784")
    submit(admin, "/shipments")
    back = mail(cloud.smtp, owner_email, "shipped back")
    assert "1Z999AA10123456784" in body(back)

    owner.goto(repair_url)
    assert "1Z999AA10123456784" in owner.locator("#shipments-heading + .table-wrap").inner_text()
    shoot(owner, "repair-paid-returned-owner")
    admin.goto(repair_url)
    submit(admin, "/steps")  # close
    assert "Closed" in admin.locator(".heading-row").inner_text()
    mail(cloud.smtp, owner_email, ": closed")
    shoot(admin, "repair-paid-closed-admin")
    _ = answered
