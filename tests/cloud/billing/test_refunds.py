"""Voids, refunds and the daily refund retry queue (SQLite, PostgreSQL; real SMTP server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from cloud.billing.errors import (
    BadOrderRequest,
    ChargeNotSettled,
    ChargeSettled,
    OrderStateConflict,
    PartialVoid,
    RefundTooLarge,
    UnknownOrder,
)
from cloud.billing.jobs import RefundRetryJob
from cloud.billing.orders import Billing, OrderStatus
from cloud.billing.payments import CARD_OK, CARD_REFUND_FAILS
from cloud.billing.rules import REFUND_RETRIES, REFUND_RETRY_INTERVAL_S, choose_reversal
from cloud.billing.tables import RefundRetryRow
from cloud.database import Store
from cloud.notifications.mailer import SmtpMailer
from cloud.notifications.queries import notifications
from cloud.notifications.sender import OutboxSender
from tests.cloud.billing_harness import TOTAL, Shop, open_shop
from tests.cloud.harness import DAY, FakeClock
from tests.smtp_fixtures import SmtpServer

S = OrderStatus
ADMIN = "user:cs-admin"


@pytest.fixture
def shop(database_url: str, clock: FakeClock) -> Iterator[Shop]:
    with open_shop(database_url, clock, notify=["billing@entitle.example"]) as opened:
        yield opened


async def _paid(shop: Shop, key: str = "k1", card: str = CARD_OK) -> int:
    result = await shop.order(key, card=card)
    assert result.status == S.SUCCEED
    return result.order_id


async def test_void_an_unsettled_charge_cancels_the_order(shop: Shop) -> None:
    order_id = await _paid(shop)
    void = await shop.billing.refunds.void(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert (void.type, void.status, void.amount_cents) == ("void", S.SUCCEED, TOTAL)
    assert shop.orders()[0].status == S.CANCEL
    [entry] = shop.provider.ledger.values()
    assert entry.voided and not entry.settled
    with pytest.raises(OrderStateConflict):  # voided once is enough
        await shop.billing.refunds.void(order_id, amount_cents=None, actor=ADMIN, now=shop.clock())


async def test_a_void_must_be_of_the_whole_charge(shop: Shop) -> None:
    order_id = await _paid(shop)
    with pytest.raises(PartialVoid, match="whole charge"):
        await shop.billing.refunds.void(
            order_id, amount_cents=TOTAL - 1, actor=ADMIN, now=shop.clock()
        )
    assert len(shop.transactions()) == 1 and shop.orders()[0].status == S.SUCCEED
    whole = await shop.billing.refunds.void(
        order_id, amount_cents=TOTAL, actor=ADMIN, now=shop.clock()
    )
    assert whole.status == S.SUCCEED


async def test_a_settled_charge_is_refunded_not_voided(shop: Shop) -> None:
    order_id = await _paid(shop)
    await shop.provider.settle_all()
    with pytest.raises(ChargeSettled, match="refund it instead"):
        await shop.billing.refunds.void(order_id, amount_cents=None, actor=ADMIN, now=shop.clock())
    assert [t.type for t in shop.transactions()] == ["charge"]
    assert shop.transactions()[0].settled  # learnt from the provider
    part = await shop.billing.refunds.refund(
        order_id, amount_cents=900, actor=ADMIN, now=shop.clock()
    )
    rest = await shop.billing.refunds.refund(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert (part.status, part.amount_cents) == (S.SUCCEED, 900)
    assert (rest.status, rest.amount_cents) == (S.SUCCEED, TOTAL - 900)
    [entry] = shop.provider.ledger.values()
    assert entry.refunded_cents == TOTAL
    with pytest.raises(RefundTooLarge):
        await shop.billing.refunds.refund(
            order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
        )
    assert shop.orders()[0].status == S.SUCCEED  # a refund does not cancel the order
    actions = [a for a, _, _ in shop.audit(order_id)]
    assert actions.count("transaction.refund") == 2


async def test_a_refund_of_an_unsettled_charge_voids_it(shop: Shop) -> None:
    order_id = await _paid(shop)
    done = await shop.billing.refunds.refund(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert (done.type, done.status, done.amount_cents) == ("void", S.SUCCEED, TOTAL)
    assert [(t.type, t.status) for t in shop.transactions()] == [
        ("charge", S.SUCCEED),
        ("void", S.SUCCEED),
    ]
    assert shop.orders()[0].status == S.CANCEL
    [entry] = shop.provider.ledger.values()
    assert entry.voided and entry.refunded_cents == 0 and entry.refund_attempts == 0
    with shop.store.transaction() as tx:
        [mail] = [n for n in notifications(tx, limit=10) if n.kind == "refund"]
        assert "was cancelled" in mail.body and "card ending 4242" in mail.body


async def test_a_partial_refund_of_an_unsettled_charge_changes_nothing(shop: Shop) -> None:
    order_id = await _paid(shop)
    with pytest.raises(ChargeNotSettled, match="has not settled"):
        await shop.billing.refunds.refund(order_id, amount_cents=100, actor=ADMIN, now=shop.clock())
    assert [t.type for t in shop.transactions()] == ["charge"]
    assert shop.orders()[0].status == S.SUCCEED
    [entry] = shop.provider.ledger.values()
    assert not entry.voided and entry.refund_attempts == 0


async def test_a_void_that_finds_the_charge_settled_falls_back_to_a_refund(shop: Shop) -> None:
    order_id = await _paid(shop)
    void = shop.provider.void

    async def settles_first(charge_id: str) -> None:  # the processor settled it meanwhile
        await shop.provider.settle_all()
        await void(charge_id)

    shop.provider.void = settles_first  # type: ignore[method-assign]
    done = await shop.billing.refunds.refund(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert (done.type, done.status, done.amount_cents) == ("refund", S.SUCCEED, TOTAL)
    assert [(t.type, t.status) for t in shop.transactions()] == [
        ("charge", S.SUCCEED),
        ("void", S.FAILED),  # kept in the books: the void was tried
        ("refund", S.SUCCEED),
    ]
    [entry] = shop.provider.ledger.values()
    assert not entry.voided and entry.refunded_cents == TOTAL
    assert shop.orders()[0].status == S.SUCCEED


@pytest.mark.parametrize(
    ("settled", "refunded", "requested", "expected"),
    [
        (False, 0, None, ("void", TOTAL)),
        (False, 0, TOTAL, ("void", TOTAL)),
        (False, 0, 1, ChargeNotSettled),
        (False, 100, None, OrderStateConflict),
        (True, 0, None, ("refund", TOTAL)),
        (True, 100, None, ("refund", TOTAL - 100)),
        (True, 0, 5, ("refund", 5)),
        (True, TOTAL, None, RefundTooLarge),
        (True, 0, TOTAL + 1, RefundTooLarge),
    ],
)
def test_choose_reversal(
    settled: bool, refunded: int, requested: int | None, expected: object
) -> None:
    def choose() -> tuple[str, int]:
        return choose_reversal(
            charge_cents=TOTAL,
            refunded_cents=refunded,
            requested_cents=requested,
            settled=settled,
        )

    if isinstance(expected, tuple):
        assert choose() == expected
    else:
        with pytest.raises(expected):  # type: ignore[call-overload]
            choose()


async def test_charges_settle_after_a_day_of_the_sandbox_clock(shop: Shop) -> None:
    shop.provider.settle_after_s = DAY
    order_id = await _paid(shop)
    shop.clock.advance(DAY)
    with pytest.raises(ChargeSettled):
        await shop.billing.refunds.void(order_id, amount_cents=None, actor=ADMIN, now=shop.clock())


@pytest.mark.parametrize("amount", [0, -5, TOTAL + 1])
async def test_bad_refund_amounts_change_nothing(shop: Shop, amount: int) -> None:
    order_id = await _paid(shop)
    await shop.provider.settle_all()
    with pytest.raises(BadOrderRequest):
        await shop.billing.refunds.refund(
            order_id, amount_cents=amount, actor=ADMIN, now=shop.clock()
        )
    assert (
        len(shop.transactions()) == 1
        and shop.provider.ledger["ch_sandbox_000001"].refunded_cents == 0
    )


async def test_unpaid_unknown_and_invoiced_orders_have_nothing_to_reverse(shop: Shop) -> None:
    unpaid = await shop.order("k1")
    invoiced = await shop.order("k2", pay_with="invoice")
    for order_id in (unpaid.order_id, invoiced.order_id):
        with pytest.raises(OrderStateConflict, match="no card charge"):
            await shop.billing.refunds.refund(
                order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
            )
    with pytest.raises(UnknownOrder):
        await shop.billing.refunds.void(404, amount_cents=None, actor=ADMIN, now=shop.clock())


async def test_a_failed_refund_is_retried_daily_three_times_then_mailed(
    shop: Shop, smtp_server: SmtpServer
) -> None:
    order_id = await _paid(shop, card=CARD_REFUND_FAILS)
    await shop.provider.settle_all()
    refund = await shop.billing.refunds.refund(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert refund.status == S.FAILED and refund.retry_at == shop.clock() + REFUND_RETRY_INTERVAL_S
    job = RefundRetryJob(shop.billing, clock=shop.clock)

    assert (await job.run_once()).failed == ()  # not due yet
    shop.clock.advance(DAY - 1)
    assert (await job.run_once()).failed == ()
    for day in range(1, REFUND_RETRIES + 1):
        shop.clock.advance(1 if day == 1 else DAY)
        report = await job.run_once()
        again = await job.run_once()  # a second pass (or worker) the same day does nothing
        assert again == type(again)((), (), ())
        if day < REFUND_RETRIES:
            assert report.failed == (refund.transaction_id,)
        else:
            assert report.exhausted == (refund.transaction_id,)
    entry = shop.provider.ledger["ch_sandbox_000001"]
    assert entry.refund_attempts == 1 + REFUND_RETRIES and entry.refunded_cents == 0
    with shop.store.transaction() as tx:
        retry = tx.query(RefundRetryRow).one()
        assert (retry.attempts, retry.next_attempt_at) == (REFUND_RETRIES, None)
        assert retry.exhausted_at == shop.clock()
        kinds = sorted(mail.kind for mail in notifications(tx, limit=10))
        assert kinds == ["invoice", "refund_failed"]  # the payment's invoice, then this
    shop.clock.advance(10 * DAY)
    assert await job.run_once() == type(report)((), (), ())  # never again

    mailer = SmtpMailer(
        host=smtp_server.host,
        port=smtp_server.port,
        sender="billing@entitle.example",
        security="none",
        timeout_s=10,
    )
    await OutboxSender(
        store=shop.store, mailer=mailer, sender="billing@entitle.example", clock=shop.clock
    ).run_once()
    [delivery] = [
        d for d in smtp_server.deliveries if d.message["X-Entitle-Kind"] == "refund_failed"
    ]
    assert sorted(delivery.rcpt_tos) == ["billing@entitle.example", "owner@example.com"]
    message = delivery.message
    assert shop.orders()[0].number in message["Subject"]
    assert "failed 4 times" in message.get_content()
    # given up: the refund no longer holds the charge, a new one can be issued
    shop.provider.failing_refund_cards.clear()
    again = await shop.billing.refunds.refund(
        order_id, amount_cents=None, actor=ADMIN, now=shop.clock()
    )
    assert again.status == S.SUCCEED and entry.refunded_cents == TOTAL


async def test_a_retry_that_succeeds_resolves_the_refund(shop: Shop) -> None:
    order_id = await _paid(shop, card=CARD_REFUND_FAILS)
    await shop.provider.settle_all()
    refund = await shop.billing.refunds.refund(
        order_id, amount_cents=500, actor=ADMIN, now=shop.clock()
    )
    with pytest.raises(RefundTooLarge):  # the queued refund still counts against the charge
        await shop.billing.refunds.refund(
            order_id, amount_cents=TOTAL, actor=ADMIN, now=shop.clock()
        )
    shop.provider.failing_refund_cards.clear()
    shop.clock.advance(DAY)
    report = await RefundRetryJob(shop.billing, clock=shop.clock).run_once()
    assert report.refunded == (refund.transaction_id,)
    txn = shop.transactions()[-1]
    assert (txn.type, txn.status, txn.amount_cents) == ("refund", S.SUCCEED, 500)
    with shop.store.transaction() as tx:  # the payment's invoice and the refund's mail
        assert sorted(n.kind for n in notifications(tx, limit=10)) == ["invoice", "refund"]


async def test_two_workers_send_each_due_retry_once(shop: Shop, database_url: str) -> None:
    """Two cloud workers (two engines on one database) run the retry job at the same moment."""
    order_ids = [await _paid(shop, key=f"k{i}", card=CARD_REFUND_FAILS) for i in range(4)]
    await shop.provider.settle_all()
    for order_id in order_ids:
        await shop.billing.refunds.refund(order_id, amount_cents=100, actor=ADMIN, now=shop.clock())
    shop.clock.advance(DAY)
    with Store.open(database_url) as other_store:
        other = Billing(other_store, shop.provider)
        jobs = [RefundRetryJob(b, clock=shop.clock) for b in (shop.billing, other)]
        reports = await asyncio.gather(*(job.run_once() for job in jobs))
    retried = sorted(t for report in reports for t in report.failed)
    assert len(retried) == len(set(retried)) == 4
    assert [e.refund_attempts for e in shop.provider.ledger.values()] == [2] * 4
