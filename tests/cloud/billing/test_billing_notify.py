"""Who ``ENTITLE_BILLING_NOTIFY`` reaches: the operator's finance inbox hears of failed
refunds (a person must act), not of every invoice, and is never on a customer's order.

Read at a real SMTP server (aiosmtpd), SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cloud.billing.jobs import RefundRetryJob
from cloud.billing.orders import OrderStatus
from cloud.billing.payments import CARD_REFUND_FAILS
from cloud.billing.rules import REFUND_RETRIES
from cloud.notifications.mailer import SmtpMailer
from cloud.notifications.sender import OutboxSender
from tests.cloud.billing_harness import Shop, open_shop
from tests.cloud.harness import DAY, FakeClock
from tests.smtp_fixtures import SmtpServer

FINANCE = "finance@entitle.example"
BUYER = "owner@example.com"  # the shop's buyer (billing_harness)
SENDER = "billing@entitle.example"


@pytest.fixture
def shop(database_url: str, clock: FakeClock) -> Iterator[Shop]:
    with open_shop(database_url, clock, notify=[FINANCE]) as opened:
        yield opened


async def _send(shop: Shop, server: SmtpServer) -> None:
    mailer = SmtpMailer(
        host=server.host, port=server.port, sender=SENDER, security="none", timeout_s=10
    )
    await OutboxSender(store=shop.store, mailer=mailer, sender=SENDER, clock=shop.clock).run_once()


async def test_an_invoice_goes_to_the_buyer_only(shop: Shop, smtp_server: SmtpServer) -> None:
    result = await shop.order("k1", pay_with="invoice")
    assert result.status == OrderStatus.SUCCEED
    await _send(shop, smtp_server)
    [delivery] = smtp_server.deliveries
    assert delivery.message["X-Entitle-Kind"] == "invoice"
    assert delivery.rcpt_tos == (BUYER,)
    # the order a customer reads (GET /orders/{id} shows ``notify``) names no operator inbox
    assert [row.notify for row in shop.orders()] == [[BUYER]]


async def test_a_refund_that_failed_every_retry_reaches_finance_and_the_buyer(
    shop: Shop, smtp_server: SmtpServer
) -> None:
    result = await shop.order("k1", card=CARD_REFUND_FAILS)
    await shop.provider.settle_all()
    await shop.billing.refunds.refund(
        result.order_id, amount_cents=None, actor="user:cs-admin", now=shop.clock()
    )
    job = RefundRetryJob(shop.billing, clock=shop.clock)
    for _ in range(REFUND_RETRIES):
        shop.clock.advance(DAY)
        await job.run_once()
    await _send(shop, smtp_server)
    kinds = [d.message["X-Entitle-Kind"] for d in smtp_server.deliveries]
    assert kinds == ["invoice", "refund_failed"]  # the card payment's invoice, then this
    delivery = smtp_server.deliveries[1]
    assert sorted(delivery.rcpt_tos) == [FINANCE, BUYER]
