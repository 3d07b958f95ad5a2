"""A ticket's life as the vendor's manual runs it, in Chromium on `entitle cloud serve`.

Must show 3: the owner checks the device before reporting, opens a data-accuracy ticket
with the five questions, a copy address and a screenshot attached (it shows under the
opening message); support takes it (responsible person), answers with a log file that
shows under its answer, sets a status, adds an action task, escalates to the third line
with a plan and an ETA and proposes to close; the owner downloads the screenshot and
closes the ticket. After each step the mail it causes is read from the SMTP server (the
cloud's outbox sends it). Another customer gets 404 for the screenshot.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.browser.conftest import Dashboard, answered
from tests.waiting import HANG_S

# a real 1x1 PNG: the cloud sniffs the type from the bytes
SCREENSHOT = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cf000000030101006bc5d2e80000000049454e44ae426082"
)


def _mail(dashboard: Dashboard, address: str, subject: str, *, after: int) -> EmailMessage:
    """The first mail to ``address`` whose subject contains ``subject``, among those the
    SMTP server received after the first ``after``."""
    deadline = time.monotonic() + HANG_S
    while True:
        for mail in dashboard.smtp.messages[after:]:
            if address in str(mail["To"]) and subject in str(mail["Subject"]):
                return mail
        if time.monotonic() > deadline:
            seen = [(m["To"], m["Subject"]) for m in dashboard.smtp.messages[after:]]
            raise AssertionError(f"no mail to {address} about {subject!r}: {seen}")
        time.sleep(0.1)


def _text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def test_a_tickets_life_with_mails_and_an_attachment(
    login: Any, dashboard: Dashboard, shoot: Any, tmp_path: Path
) -> None:
    """Must show 3."""
    owner = dashboard.new_user("life_owner", "owner")
    dashboard.new_user("life_stranger", "owner")
    agent = dashboard.new_user("life_agent", "support")
    installation = dashboard.new_installation("Market Hall", owner="life_owner")
    device = str(dashboard.new_device(installation, kind="counter")["device_id"])
    copy = "manager@market-hall.example"
    shot = tmp_path / "saturday-counts.png"
    shot.write_bytes(SCREENSHOT)
    raw = tmp_path / "raw-counts.log"
    raw.write_bytes(b"2026-12-05 10:00 entrance in=412 out=398\n" * 3)

    # the owner checks the device first, then reports
    page = login("life_owner")
    page.goto(f"/tickets/new?device={device}&category=data_accuracy")
    check = page.locator(".report-check")
    assert f"what {device} says about itself" in check.inner_text()
    assert "has not reported its health yet" in check.inner_text()
    assert "Software bug" not in page.locator("#category").inner_text()  # support only
    shoot(page, "ticket-new-check-owner")
    page.select_option("#category", "data_accuracy")
    page.fill("#subject", "Saturday counts too low")
    page.fill("#body", "Saturday's counts are half of last week's.")
    page.fill("#q_what", "Counts are half of what we expect")
    page.fill("#q_where", "Main entrance")
    page.fill("#q_when", "Since last Saturday, all day")
    page.fill("#q_how", "The daily report shows 400 instead of 800")
    page.fill("#cc", copy)
    page.set_input_files("#file", str(shot))
    sent = len(dashboard.smtp.messages)
    page.click("form.narrow-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/tickets/\d+$"))
    ticket_id = int(page.url.rsplit("/", 1)[1])
    assert "is open" in page.locator(".flash").inner_text()
    link = page.locator(".messages .from-customer .attachments a")  # under the opening words
    assert link.inner_text() == "saturday-counts.png"
    opened = _mail(dashboard, copy, f"[Ticket #{ticket_id}] New message", after=sent)
    assert "Saturday's counts are half" in _text(opened)
    assert f"{dashboard.url}/tickets/{ticket_id}" in _text(opened)

    # support takes it, answers, sets a status and plans the work
    desk = login("life_agent")
    desk.goto(f"/tickets/{ticket_id}")
    assert (
        "Counts are half of what we expect" in desk.locator("#questions-heading + dl").inner_text()
    )
    desk.click(".support-controls summary")
    desk.select_option("#user_id", str(agent["id"]))
    desk.click("form[action$='/responsible'] button")
    assert "responsible person is set" in desk.locator(".flash").inner_text()
    sent = len(dashboard.smtp.messages)
    desk.fill("#body", "We will recount Saturday from the sensor's raw data.")
    desk.set_input_files("#answer-files", str(raw))
    desk.click("form[action$='/messages'] button")
    answer = _mail(dashboard, owner["email"], f"[Ticket #{ticket_id}] New message", after=sent)
    assert "recount Saturday" in _text(answer) and copy in str(answer["To"])
    sent_with = desk.locator(".messages .from-support").filter(has_text="recount Saturday")
    assert sent_with.locator(".attachments a").inner_text() == "raw-counts.txt"

    sent = len(dashboard.smtp.messages)
    desk.click(".support-controls summary")
    desk.select_option("#status", "recheck_approved")
    desk.click("form[action$='/status'] button")
    status = _mail(dashboard, owner["email"], f"[Ticket #{ticket_id}] Now First line", after=sent)
    assert "status recheck approved" in _text(status)

    desk.click("text=Add an action task")
    desk.select_option("#task-type", "data_recheck")
    desk.fill("#task-title", "Recount Saturday from raw data")
    desk.fill("#task-hours", "1.5")
    desk.fill("#task-date", (datetime.now(UTC) + timedelta(days=2)).date().isoformat())
    desk.click("form[action$='/tasks'] button")
    assert "Recount Saturday from raw data" in desk.locator("#tasks-heading + div").inner_text()

    sent = len(dashboard.smtp.messages)
    desk.select_option("#stage", "third_line")
    desk.click("text=To the third line: its plan and ETA")
    desk.fill("#plan", "Engineering fixes the counting line's calibration.")
    desk.fill("#eta", (datetime.now(UTC) + timedelta(days=5)).date().isoformat())
    desk.click("form.move-form button[type=submit]")
    assert "Engineering fixes" in desk.locator(".third-line").inner_text()
    third = _mail(dashboard, owner["email"], f"[Ticket #{ticket_id}] Now Third line", after=sent)
    assert "Third line" in _text(third)
    shoot(desk, "ticket-third-line-support")

    sent = len(dashboard.smtp.messages)
    desk.select_option("#stage", "suggest_close")
    desk.click("form.move-form button[type=submit]")
    proposal = _mail(dashboard, owner["email"], f"[Ticket #{ticket_id}] Solved?", after=sent)
    assert "closes by itself in 7 days" in _text(proposal)
    desk.goto("/tickets")
    assert f"#{ticket_id}" in desk.locator("#col-suggest_close").locator("..").inner_text()
    shoot(desk, "ticket-board-support")

    # the owner downloads the screenshot and closes the ticket
    page.goto(f"/tickets/{ticket_id}")
    mine = page.locator(".messages .from-customer .attachments a")
    with page.expect_download() as info:
        mine.click()
    assert Path(info.value.path()).read_bytes() == SCREENSHOT
    assert page.locator(".messages .from-support .attachments a").inner_text() == "raw-counts.txt"
    href = mine.get_attribute("href")
    assert href is not None
    assert "proposes to close it" in page.locator(".suggest-close").inner_text()
    shoot(page, "ticket-suggested-close-owner")
    sent = len(dashboard.smtp.messages)
    page.select_option("#stage", "closed")
    page.click("form.move-form button[type=submit]")
    assert "has moved" in page.locator(".flash").inner_text()
    closed = _mail(dashboard, agent["email"], f"[Ticket #{ticket_id}] Now Closed", after=sent)
    assert "status closed" in _text(closed)

    # another customer: the file is not there for them
    stranger = login("life_stranger")
    refused = stranger.goto(href)
    assert refused is not None and refused.status == 404
    answered(stranger, 404)
    assert stranger.request.get(href).status == 404
    shoot(stranger, "ticket-attachment-404-other-owner")
