"""Billing's mails: the text of each kind, and the invoice mail with its PDF, queued once."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from cloud.billing import notices
from cloud.billing.invoices import Invoice, InvoiceLine, Party
from cloud.billing.notices import enqueue_invoice
from cloud.database import Store
from cloud.notifications.outbox import compose
from cloud.notifications.queries import claim_due
from tests.cloud.harness import DAY, START


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


def _invoice() -> Invoice:
    return Invoice(
        number="2026-000042",
        order_number="2026-000042",
        issued_at=START,
        seller=Party("Entitle GmbH"),
        buyer=Party("Acme Security"),
        lines=(InvoiceLine("TSF16100", "Remote Services", 13, 9900),),
        currency="EUR",
        vat_percent=Decimal("19"),
        due_at=START + 30 * DAY,
    )


_NOTICES = {
    "renewal_notice": lambda: notices.renewal_notice(
        installation="Shop",
        services=[notices.ServiceLine("TSF16100", "Remote Services", START + 60 * DAY)],
        renews_on=START + 30 * DAY,
        amount_cents=9900,
        currency="EUR",
        pay_with="card",
    ),
    "charge_failed": lambda: notices.charge_failed(
        installation="Shop",
        order_number="2026-000042",
        amount_cents=9900,
        currency="EUR",
        reason="card declined",
        next_retry_at=START + 7 * DAY,
        expires_at=START + 30 * DAY,
    ),
    "charge_retry_failed": lambda: notices.charge_retry_failed(
        installation="Shop",
        order_number="2026-000042",
        amount_cents=9900,
        currency="EUR",
        attempt=3,
        next_retry_at=None,
        expires_at=START + 30 * DAY,
    ),
    "subscription_expired": lambda: notices.subscription_expired(
        installation="Shop",
        services=[notices.ServiceLine("TSF16100", "Remote Services", START)],
        expired_at=START,
    ),
    "refund_failed": lambda: notices.refund_failed(
        order_number="2026-000042",
        amount_cents=9900,
        currency="EUR",
        charge_id="ch_1",
        attempts=3,
        last_error="provider timeout",
    ),
    "invoice": lambda: notices.invoice(_invoice()),
    "refund": lambda: notices.refund_made(
        order_number="2026-000042",
        amount_cents=9900,
        currency="EUR",
        voided=False,
        card_last4="4242",
        at=START,
    ),
    "payment_received": lambda: notices.payment_received(
        installation="Shop",
        order_number="2026-000042",
        amount_cents=9900,
        currency="EUR",
        paid_at=START,
    ),
}


def test_every_kind_has_a_template() -> None:
    assert set(_NOTICES) == set(notices.KINDS)


@pytest.mark.parametrize("kind", sorted(_NOTICES))
def test_each_template_renders_a_clean_notice_with_the_facts(kind: str) -> None:
    notice = _NOTICES[kind]()
    assert notice.kind == kind
    compose(to=["a@example.com"], **notice.fields())  # a valid e-mail
    text = notice.subject + notice.body
    if kind != "subscription_expired" and kind != "renewal_notice":
        assert "2026-000042" in text  # the order number
    if kind in ("renewal_notice", "charge_failed", "invoice", "payment_received", "refund"):
        assert "EUR 99.00" in text
    if kind in ("charge_failed", "charge_retry_failed", "subscription_expired"):
        assert "Shop" in notice.subject
    assert "2026-01-31" in notice.body or "2026-01-01" in notice.body or kind == "refund_failed"


def test_templates_say_what_happens_next() -> None:
    assert "try again on 2026-01-08" in _NOTICES["charge_failed"]().body
    assert "stop on that date" in _NOTICES["charge_retry_failed"]().body.replace("\n", " ")
    assert "last automatic attempt" in _NOTICES["charge_retry_failed"]().body
    assert "Action needed" in _NOTICES["charge_failed"]().subject
    assert "provider timeout" in _NOTICES["refund_failed"]().body
    assert "pay it by 2026-01-31" in _NOTICES["invoice"]().body


def test_enqueue_invoice_attaches_the_pdf_once(store: Store) -> None:
    for _ in range(2):
        with store.transaction() as tx:
            enqueue_invoice(tx, bill=_invoice(), to=["acme@example.com"], now=START)
    with store.transaction() as tx:
        [message] = claim_due(tx, now=START, lease_s=60, limit=10)
    assert message.kind == "invoice" and message.dedupe_key == "invoice:2026-000042"
    [pdf] = message.attachments
    assert pdf.filename == "invoice-2026-000042.pdf" and pdf.data.startswith(b"%PDF-")
