"""The mails of a subscription's year, read as they arrived at a real SMTP server (aiosmtpd).

One flow through the API on the test clock (SQLite and PostgreSQL): an
invoiced partner buys, its invoice (PDF attached, read back with pypdf)
reaches the buyer; the renewal notices arrive on their own day, two months
before the end; the renewal is invoiced one month before; a card purchaser
whose card now declines gets the failed-charge mail. Every mail is checked
as the SMTP server received it (envelope recipients, headers, text,
attachment), not as an outbox row.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import httpx
import pypdf
import pytest
from fastapi import FastAPI

from cloud import create_app
from cloud.app import CloudState
from cloud.billing.payments import CARD_DECLINED, CARD_OK
from cloud.devices import memberships
from cloud.notifications.queries import notifications
from cloud.notifications.tables import NotificationStatus
from cloud.settings import CloudSettings
from cloud.testclock import TestClock
from cloud.testing import AccountsSimulator, PublisherSimulator
from tests.cloud.harness import (
    client,
    connect,
    new_api_key,
    new_company,
    new_user,
    running,
    user_api_key,
)
from tests.cloud.pages import pdf_text
from tests.smtp_fixtures import Delivery, SmtpServer

SENDER = "Entitle billing <billing@entitle.example>"
INVOICED = "fitter@integra.example"  # partner of a company that pays by invoice
CARDHOLDER = "buyer@cardco.example"  # partner of a company that pays by card


def ts(y: int, m: int, d: int) -> int:
    return int(datetime(y, m, d, tzinfo=UTC).timestamp())


@dataclass
class _Flow:
    app: FastAPI
    admin: httpx.AsyncClient
    invoiced: httpx.AsyncClient
    cardholder: httpx.AsyncClient
    clock: TestClock
    smtp: SmtpServer
    installation: str

    async def advance_to(self, day: int) -> None:
        """Move the cloud's test clock to 00:00 UTC of ``day`` through the API."""
        days = (day - self.clock()) // 86_400
        response = await self.admin.post("/api/v1/test-clock/advance", json={"days": days})
        assert response.status_code == 200, response.text
        assert self.clock() == day

    @property
    def state(self) -> CloudState:
        state: CloudState = self.app.state.cloud
        return state

    def arrived(self, kind: str) -> list[Delivery]:
        return [d for d in self.smtp.deliveries if d.message["X-Entitle-Kind"] == kind]


@pytest.fixture
async def flow(settings: CloudSettings, smtp_server: SmtpServer) -> AsyncIterator[_Flow]:
    clock = TestClock(ts(2026, 1, 31))  # bought on 31 Jan 2026: runs to 1 Feb 2027
    configured = settings.model_copy(
        update={
            "test_clock": True,
            "smtp_host": smtp_server.host,
            "smtp_port": smtp_server.port,
            "smtp_security": "none",
            "smtp_sender": SENDER,
            "invoice_seller_name": "Entitle Test Seller",
        }
    )
    app = create_app(
        configured, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app), client(app, new_api_key(app)) as admin:
        assert app.state.cloud.outbox is not None  # mail goes out through the SMTP server
        inst = (await admin.post("/api/v1/installations", json={"name": "Shop"})).json()["id"]
        await connect(app, admin, inst)
        keys = []
        for email, payment_type in ((INVOICED, "invoice"), (CARDHOLDER, "card")):
            company = new_company(app, name=f"SI {payment_type}", payment_type=payment_type)
            uid = new_user(app, role="partner", company_id=company, email=email)
            with app.state.cloud.store.transaction() as tx:
                memberships.add_integrator(tx, inst, company, actor="tests", now=clock())
            keys.append(user_api_key(app, uid))
        async with client(app, keys[0]) as invoiced, client(app, keys[1]) as cardholder:
            yield _Flow(app, admin, invoiced, cardholder, clock, smtp_server, inst)


async def _sent(flow: _Flow, kind: str, count: int) -> list[Delivery]:
    """The ``kind`` mails that arrived, once the outbox is empty; there must be ``count``."""
    await _drain(flow)
    arrived = flow.arrived(kind)
    assert len(arrived) == count, [(d.rcpt_tos, d.message["Subject"]) for d in arrived]
    return arrived


async def _drain(flow: _Flow) -> None:
    """Pass the jobs until every queued mail is out.

    A test-clock day runs the outbox job after the others, so a day's mail is
    out when the advance answers; a mail of a request goes with the next pass
    (ours, or the app's background one, which may hold it leased for a moment).
    A mail that could not be sent stops the wait and fails the test.
    """
    while True:
        with flow.state.store.transaction() as tx:
            rows = notifications(tx, limit=1000)
        queued = [r for r in rows if r.status is NotificationStatus.QUEUED]
        errors = [(r.subject, r.last_error) for r in rows if r.last_error]
        assert not errors, errors
        if not queued:
            return
        await flow.state.jobs.run_once()
        await asyncio.sleep(0.01)


def _only(delivery: Delivery, to: str) -> EmailMessage:
    assert delivery.rcpt_tos == (to,) and delivery.message["To"] == to
    assert delivery.mail_from == "billing@entitle.example"
    return delivery.message


def _sent_at(message: EmailMessage) -> int:
    return int(parsedate_to_datetime(message["Date"]).timestamp())


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _pdf_text(message: EmailMessage, order_number: str) -> str:
    [attachment] = list(message.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == f"invoice-{order_number}.pdf"
    reader = pypdf.PdfReader(io.BytesIO(attachment.get_content()))
    assert reader.metadata is not None and reader.metadata.title == f"Invoice {order_number}"
    return pdf_text(attachment.get_content())


async def test_a_year_of_subscription_mail_as_the_smtp_server_received_it(flow: _Flow) -> None:
    # an invoiced partner buys Remote Services: active at once, invoice mailed with its PDF
    bought = await flow.invoiced.post(
        "/api/v1/subscriptions", json={"installation_id": flow.installation, "product": "TSF16100"}
    )
    assert bought.status_code == 201 and bought.json()["order_status"] == "Succeed", bought.text
    order = (await flow.invoiced.get(f"/api/v1/orders/{bought.json()['order_id']}")).json()
    [invoice] = await _sent(flow, "invoice", 1)
    mail = _only(invoice, INVOICED)
    assert mail["Subject"] == f"Invoice for order {order['number']}"
    assert f"Order {order['number']} (purchase) for installation {flow.installation}" in _text(mail)
    assert "60.00 EUR, payable by invoice" in _text(mail)
    pdf = _pdf_text(mail, order["number"])
    for expected in (
        order["number"],
        "Entitle Test Seller",
        "TSF16100",
        "Remote Services",
        "EUR 60.00",
    ):
        assert expected in pdf, expected

    # a card partner buys Voice Control; later it takes over the renewal with a card that
    # will decline (deactivate, then reactivate with the new card: nothing due now)
    voice = await flow.cardholder.post(
        "/api/v1/subscriptions",
        json={"installation_id": flow.installation, "product": "TSF12125", "card_token": CARD_OK},
    )
    assert voice.status_code == 201 and voice.json()["order_status"] == "Succeed", voice.text
    # paid by card: its invoice follows at once, "paid by card ending 4242" (TTecomm)
    [_, card_invoice] = await _sent(flow, "invoice", 2)
    mail = _only(card_invoice, CARDHOLDER)
    assert "paid by card ending 4242" in _text(mail)
    assert "36.00" in _pdf_text(mail, mail["Subject"].split()[-1])
    voice_id = voice.json()["subscription"]["id"]
    assert (await flow.cardholder.post(f"/api/v1/subscriptions/{voice_id}/deactivate")).is_success
    again = await flow.cardholder.post(
        f"/api/v1/subscriptions/{voice_id}/reactivate", json={"card_token": CARD_DECLINED}
    )
    assert again.status_code == 200 and again.json()["due_now_cents"] == 0, again.text

    # no notice before its day; on 1 Dec 2026, two months before the end, one to each purchaser
    await flow.advance_to(ts(2026, 11, 30))
    await _drain(flow)
    assert flow.arrived("renewal_notice") == []
    await flow.advance_to(ts(2026, 12, 1))
    notices = {d.rcpt_tos: d.message for d in await _sent(flow, "renewal_notice", 2)}
    assert set(notices) == {(INVOICED,), (CARDHOLDER,)}
    remote, voice_notice = notices[(INVOICED,)], notices[(CARDHOLDER,)]
    assert remote["Subject"] == "Remote Services renews on 2027-02-01T00:00:00Z"
    assert _sent_at(remote) == ts(2026, 12, 1)  # on its day, not at the end of the jump
    assert (
        f"Remote Services of installation {flow.installation} renews for 12 months on "
        "2027-02-01T00:00:00Z; 60.00 will be charged on 2027-01-01T00:00:00Z."
    ) in _text(remote)
    assert voice_notice["Subject"] == "Voice Control renews on 2027-02-01T00:00:00Z"
    assert "36.00 will be charged on 2027-01-01T00:00:00Z" in _text(voice_notice)
    assert flow.arrived("charge_failed") == [] and len(flow.arrived("invoice")) == 2

    # 1 Jan 2027, one month before the end: the renewal is invoiced, the card declines
    await flow.advance_to(ts(2026, 12, 31))
    await _drain(flow)
    assert len(flow.arrived("invoice")) == 2 and flow.arrived("charge_failed") == []
    await flow.advance_to(ts(2027, 1, 1))
    [_, _, renewal_invoice] = await _sent(flow, "invoice", 3)  # none for the declined card
    mail = _only(renewal_invoice, INVOICED)
    renewal = [
        o
        for o in (await flow.invoiced.get("/api/v1/orders?type=renewal")).json()
        if o["pay_with"] == "invoice"
    ]
    [renewal_order] = renewal
    assert mail["Subject"] == f"Invoice for order {renewal_order['number']}"
    assert "(renewal)" in _text(mail) and "60.00 EUR, payable by invoice" in _text(mail)
    pdf = _pdf_text(mail, renewal_order["number"])
    assert renewal_order["number"] in pdf and "EUR 60.00" in pdf

    [failed] = await _sent(flow, "charge_failed", 1)
    mail = _only(failed, CARDHOLDER)
    assert mail["Subject"] == "Payment for Voice Control failed"
    body = _text(mail)
    assert f"The renewal charge for Voice Control of installation {flow.installation}" in body
    assert "We will try again on 2027-01-04T00:00:00Z" in body
    assert "The service stops at 2027-02-01T00:00:00Z unless paid." in body
    assert _sent_at(mail) == ts(2027, 1, 1)
    # nothing went to anyone else
    assert {d.rcpt_tos for d in flow.smtp.deliveries} == {(INVOICED,), (CARDHOLDER,)}
