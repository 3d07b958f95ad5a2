"""Placing orders, checkout, cancel and reconciliation (billing service; SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.billing import queries as repo
from cloud.billing.errors import (
    BadOrderRequest,
    IdempotencyConflict,
    OrderStateConflict,
    UnknownOrder,
)
from cloud.billing.orders import Billing, OrderLine, OrderStatus
from cloud.billing.payments import CARD_DECLINED, CARD_OK, CARD_TIMEOUT, SandboxPaymentProvider
from cloud.billing.rules import STALE_CHARGE_S, TxnType
from cloud.database import Store
from cloud.errors import UnknownInstallation
from cloud.notifications.queries import notifications
from cloud.notifications.tables import NotificationAttachmentRow
from cloud.settings import CloudSettings
from tests.cloud.billing_harness import LINES, TOTAL, Shop, open_shop
from tests.cloud.harness import FakeClock

S = OrderStatus


@pytest.fixture
def shop(database_url: str, clock: FakeClock) -> Iterator[Shop]:
    with open_shop(database_url, clock, notify=["billing@entitle.example"]) as opened:
        yield opened


@pytest.mark.parametrize(
    ("card", "status", "txn_status", "charged"),
    [
        (CARD_OK, S.SUCCEED, S.SUCCEED, True),
        (CARD_DECLINED, S.FAILED, S.FAILED, False),
        (CARD_TIMEOUT, S.TIME_OUT, S.TIME_OUT, True),  # charged, but the answer was lost
    ],
)
async def test_each_test_card_gives_its_outcome(
    shop: Shop, card: str, status: OrderStatus, txn_status: OrderStatus, charged: bool
) -> None:
    result = await shop.order("k1", card=card)
    assert (result.status, result.amount_cents, result.replayed) == (status, TOTAL, False)
    assert result.number == f"EN-2026-{result.order_id:06d}"
    [txn] = shop.transactions(result.order_id)
    assert (txn.type, txn.status, txn.amount_cents) == ("charge", txn_status, TOTAL)
    [entry] = shop.provider.ledger.values()
    assert (entry.status == "succeeded") is charged
    assert entry.idempotency_key == txn.idempotency_key == f"order:{result.order_id}:charge:1"
    actions = [(a, after["status"]) for a, _, after in shop.audit(result.order_id) if after]
    assert actions[0] == ("order.create", "Processing")
    assert ("order.status", str(status)) in actions


async def test_order_rows_hold_lines_buyer_and_notify_list(shop: Shop) -> None:
    result = await shop.order("k1", card=CARD_OK)
    [row] = shop.orders()
    assert (row.id, row.kind, row.pay_with, row.currency) == (
        result.order_id,
        "purchase",
        "card",
        "EUR",
    )
    assert row.buyer_user_id == shop.buyer
    assert row.notify == ["owner@example.com"]  # the operator inbox hears of failed refunds only


async def test_same_key_twice_is_one_order_and_one_charge(shop: Shop) -> None:
    first = await shop.order("renewal:sub-7:2026-12", card=CARD_OK)
    again = await shop.order("renewal:sub-7:2026-12", card=CARD_OK)
    assert again.replayed and (again.order_id, again.status) == (first.order_id, S.SUCCEED)
    assert len(shop.orders()) == 1 and len(shop.transactions()) == 1
    assert shop.provider.charges_made == 1


async def test_a_key_reused_for_another_order_is_refused(shop: Shop) -> None:
    await shop.order("k1", card=CARD_OK)
    with pytest.raises(IdempotencyConflict, match="use a new key"):
        await shop.order("k1", card=CARD_OK, lines=LINES[:1])
    assert len(shop.orders()) == 1 and shop.provider.charges_made == 1


def test_two_workers_placing_the_same_renewal_make_one_order_and_one_charge(
    database_url: str, clock: FakeClock
) -> None:
    """Must-show 5: two cloud workers (two engines, one database) race on each key."""
    with open_shop(database_url, clock) as shop, Store.open(database_url) as other_store:
        other = Billing(other_store, shop.provider)
        workers = (shop.billing, other)
        results: list[object] = []
        for round_ in range(8):
            barrier = threading.Barrier(2)

            def place(
                billing: Billing,
                key: str = f"renewal:sub-1:{round_}",
                barrier: threading.Barrier = barrier,
            ) -> None:
                barrier.wait()
                results.append(
                    asyncio.run(
                        billing.place_order(
                            kind="renewal",
                            buyer=shop.buyer,
                            installation_id=shop.installation_id,
                            lines=LINES,
                            pay_with="card",
                            card_token=CARD_OK,
                            idempotency_key=key,
                            now=clock(),
                        )
                    )
                )

            threads = [threading.Thread(target=place, args=(w,)) for w in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert len(results) == 16
        orders = shop.orders()
        assert len(orders) == 8
        assert len(shop.transactions()) == 8
        assert shop.provider.charges_made == 8
        assert len(shop.provider.ledger) == 8
        by_order: dict[int, list[bool]] = {}
        for result in results:
            by_order.setdefault(result.order_id, []).append(result.replayed)  # type: ignore[attr-defined]
        assert sorted(by_order) == [o.id for o in orders]
        assert all(sorted(flags) == [False, True] for flags in by_order.values())


async def test_checkout_keeps_the_order_processing_until_paid(shop: Shop) -> None:
    paid: list[int] = []

    @shop.billing.on_paid
    async def activate(order_id: int) -> None:
        paid.append(order_id)

    result = await shop.order("k1")
    assert result.status == S.PROCESSING and shop.transactions() == []
    declined = await shop.billing.pay(
        result.order_id, card_token=CARD_DECLINED, actor="user:1", now=shop.clock()
    )
    assert declined.status == S.FAILED and paid == []
    ok = await shop.billing.pay(
        result.order_id, card_token=CARD_OK, actor="user:1", now=shop.clock()
    )
    assert ok.status == S.SUCCEED and paid == [result.order_id]
    assert [t.status for t in shop.transactions()] == [S.FAILED, S.SUCCEED]
    with pytest.raises(OrderStateConflict):
        await shop.billing.pay(
            result.order_id, card_token=CARD_OK, actor="user:1", now=shop.clock()
        )
    assert shop.provider.charges_made == 2 and paid == [result.order_id]
    [row] = shop.orders()
    assert row.paid_handled_at == shop.clock()


async def test_a_failed_callback_is_run_again_by_reconciliation(shop: Shop) -> None:
    calls: list[int] = []

    async def flaky(order_id: int) -> None:
        calls.append(order_id)
        if len(calls) == 1:
            raise RuntimeError("subscription store down")

    shop.billing.on_paid(flaky)
    result = await shop.order("k1")
    await shop.billing.pay(result.order_id, card_token=CARD_OK, actor="user:1", now=shop.clock())
    assert shop.orders()[0].paid_handled_at is None
    report = await shop.billing.reconcile(now=shop.clock())
    assert report.callbacks_run == (result.order_id,) and calls == [result.order_id] * 2
    assert (await shop.billing.reconcile(now=shop.clock())).callbacks_run == ()


async def test_invoice_orders_succeed_at_once_and_mail_the_invoice(
    shop: Shop, tmp_path: Path
) -> None:
    shop.billing.invoice_settings = CloudSettings(
        data_dir=tmp_path, invoice_seller_name="Entitle AB"
    )
    result = await shop.order("k1", pay_with="invoice")
    assert result.status == S.SUCCEED and shop.transactions() == []
    with shop.store.transaction() as tx:
        [mail] = notifications(tx, limit=10)
        [attachment] = tx.scalars(select(NotificationAttachmentRow)).all()
        name, content_type, pdf = attachment.filename, attachment.content_type, attachment.data
    assert mail.kind == "invoice" and result.number in mail.subject
    assert mail.recipients == ["owner@example.com"]
    assert result.number in name and content_type == "application/pdf"
    assert pdf.startswith(b"%PDF-")
    assert shop.provider.charges_made == 0


async def test_a_free_order_needs_no_charge(shop: Shop) -> None:
    free = (OrderLine("TSF16100", "reactivation, 0 due now", 0, 0),)
    result = await shop.order("k1", card=CARD_OK, kind="reactivation", lines=free)
    assert (result.status, result.amount_cents) == (S.SUCCEED, 0)
    assert shop.provider.charges_made == 0


async def test_cancel_an_unpaid_order_only(shop: Shop) -> None:
    unpaid = await shop.order("k1")
    assert (
        await shop.billing.cancel(unpaid.order_id, actor="user:1", now=shop.clock())
    ).status == S.CANCEL
    with pytest.raises(OrderStateConflict):
        await shop.billing.pay(
            unpaid.order_id, card_token=CARD_OK, actor="user:1", now=shop.clock()
        )
    paid = await shop.order("k2", card=CARD_OK)
    with pytest.raises(OrderStateConflict, match="voided or refunded"):
        await shop.billing.cancel(paid.order_id, actor="user:1", now=shop.clock())
    with pytest.raises(UnknownOrder):
        await shop.billing.cancel(999, actor="user:1", now=shop.clock())
    assert shop.provider.charges_made == 1


async def test_a_timeout_is_reconciled_through_system_processing(shop: Shop) -> None:
    paid: list[int] = []
    shop.billing.on_paid(lambda order_id: _append(paid, order_id))
    result = await shop.order("k1", card=CARD_TIMEOUT)
    assert result.status == S.TIME_OUT
    report = await shop.billing.reconcile(now=shop.clock())
    assert report.resolved == ((result.order_id, S.SUCCEED),) and paid == [result.order_id]
    [txn] = shop.transactions()
    assert txn.status == S.SUCCEED and txn.provider_charge_id
    statuses = [
        after["status"] for a, _, after in shop.audit(result.order_id) if a == "order.status"
    ]
    assert statuses == ["Time out", "System Processing", "Succeed"]
    assert shop.provider.charges_made == 1


async def test_a_charge_the_provider_never_received_becomes_failed(shop: Shop) -> None:
    lost = SandboxPaymentProvider()  # a fresh ledger: the provider knows nothing of it

    class Lost:
        async def charge(self, **_: object) -> object:
            raise TimeoutError("no answer")

    shop.billing.provider = Lost()  # type: ignore[assignment]
    result = await shop.order("k1", card=CARD_OK)
    assert result.status == S.TIME_OUT
    shop.billing.provider = lost
    report = await shop.billing.reconcile(now=shop.clock())
    assert report.resolved == ((result.order_id, S.FAILED),)
    # and the customer can pay it now
    again = await shop.billing.pay(
        result.order_id, card_token=CARD_OK, actor="user:1", now=shop.clock()
    )
    assert again.status == S.SUCCEED and lost.charges_made == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"lines": ()}, BadOrderRequest),
        ({"lines": (OrderLine("TSF16100", "x", 12, -1),)}, BadOrderRequest),
        ({"lines": (OrderLine("bad code!", "x", 12, 1),)}, BadOrderRequest),
        ({"kind": "gift"}, BadOrderRequest),
        ({"pay_with": "cash"}, BadOrderRequest),
        ({"idempotency_key": ""}, BadOrderRequest),
        ({"installation_id": "inst_nope"}, UnknownInstallation),
    ],
)
async def test_bad_orders_are_refused_and_nothing_is_stored(
    shop: Shop, change: dict[str, object], error: type[Exception]
) -> None:
    args: dict[str, object] = {
        "kind": "purchase",
        "buyer": shop.buyer,
        "installation_id": shop.installation_id,
        "lines": LINES,
        "pay_with": "card",
        "card_token": CARD_OK,
        "idempotency_key": "k1",
        "now": shop.clock(),
    }
    with pytest.raises(error):
        await shop.billing.place_order(**{**args, **change})  # type: ignore[arg-type]
    assert shop.orders() == [] and shop.provider.charges_made == 0


async def _append(into: list[int], order_id: int) -> None:
    into.append(order_id)


async def test_a_worker_that_died_mid_charge_is_reconciled_once_stale(shop: Shop) -> None:
    result = await shop.order("k1")
    with shop.store.transaction() as tx:  # what pay() commits before it calls the provider
        repo.add_transaction(
            tx,
            order_id=result.order_id,
            type=TxnType.CHARGE,
            amount_cents=TOTAL,
            idempotency_key=f"order:{result.order_id}:charge:1",
            provider="sandbox",
            now=shop.clock(),
        )
    assert (await shop.billing.reconcile(now=shop.clock())).resolved == ()  # may still answer
    shop.clock.advance(STALE_CHARGE_S)
    report = await shop.billing.reconcile(now=shop.clock())
    assert report.resolved == ((result.order_id, S.FAILED),)  # the provider never got it
    statuses = [
        after["status"] for a, _, after in shop.audit(result.order_id) if a == "order.status"
    ]
    assert statuses == ["Time out", "System Processing", "Failed"]
