"""Payments of subscription orders: delivered or refunded, once each; reversals taken back.

Every subscription order has a link (:class:`~cloud.subscriptions.tables.SubscriptionOrderRow`)
written in the order's own transaction, before any money moves. Billing's
callbacks land here:

* on paid (at once, after a checkout, or when reconciliation finds a lost
  answer was charged): the payment event goes to the pure rule under the
  link's and the subscription's row locks; the rule applies it or emits
  :class:`~cloud.subscriptions.rules.lifecycle.RefundPayment`. The link's ``outcome``
  records which (``applied`` / ``refund``), so a payment delivered twice is
  handled once. A refund is audited, the buyer is told, and it is sent after
  the commit; until billing confirms it (``refunded``), the renewal job sends
  it again each pass, so a crash in between loses nothing.
* on reversed (cancelled unpaid, voided, refunded in full): an unpaid
  purchase's cancel ends the pending subscription; an applied payment's
  reversal takes back what it bought
  (:class:`~cloud.subscriptions.rules.lifecycle.PaymentReversed`);
  a reversed purchase also gives back the renewals paid on top of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.billing import queries as billing_repo
from cloud.billing.errors import OrderStateConflict, RefundTooLarge
from cloud.billing.orders import Billing
from cloud.database import Store
from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.lifecycle import (
    Abandon,
    Activate,
    ChargeSucceeded,
    Event,
    Notify,
    PaymentReversed,
    RefundPayment,
    RenewalPaid,
    Subscription,
    Transition,
    apply,
)
from cloud.subscriptions.tables import Outcome, SubscriptionOrderRow, SubscriptionRow
from common.clock import Clock

__all__ = ["MANUAL", "Settlement"]

_log = logging.getLogger(__name__)
MANUAL = -1  # ``attempt`` of an order link for a renewal the user asked for
_ACTOR = "system:billing"
_ACTIONS = {
    "purchase": "subscription.activate",
    "manual": "subscription.renew",
    "renewal": "subscription.charge_paid",
    "plan_change": "subscription.plan_changed",
}


class Commit(Protocol):
    """The subscriptions service's one place a transition is persisted (its ``commit``)."""

    def __call__(
        self,
        tx: Session,
        row: SubscriptionRow | None,
        before: Subscription | None,
        t: Transition,
        *,
        actor: str,
        action: str,
        now: int,
    ) -> tuple[SubscriptionRow, list[str]]: ...


class Notifier(Protocol):
    """The subscriptions service's ``notify``: queue a lifecycle message (deduplicated)."""

    def __call__(self, session: Session, effect: Notify, *, now: int) -> None: ...


class Settlement:
    """Billing's on-paid and on-reversed callbacks for subscription orders.

    A collaborator the subscriptions service owns: it is handed the store,
    billing, the clock and the service's ``commit``, ``reissue`` and ``notify``,
    and knows nothing else of the service.
    """

    def __init__(
        self,
        store: Store,
        billing: Billing,
        *,
        clock: Clock,
        commit: Commit,
        reissue: Callable[[Sequence[str]], Awaitable[None]],
        notify: Notifier,
    ) -> None:
        self._store = store
        self._billing = billing
        self._clock = clock
        self._commit = commit
        self._reissue = reissue
        self._notify = notify
        billing.on_paid(self.on_paid)
        billing.on_reversed(self.on_reversed)

    # paid -----------------------------------------------------------------------
    async def on_paid(self, order_id: int) -> None:
        """Deliver the order's payment, or refund it; idempotent."""
        now = self._clock()

        def work() -> tuple[list[str], bool]:
            with self._store.transaction() as tx:
                link = rows.order_link(tx, order_id, lock=True)
                if link is None or link.outcome is not None:
                    return [], False  # not a subscription's order, or settled already
                row = rows.subscription_of(tx, link.subscription_id, lock=True)
                assert row is not None  # links cascade with their subscription
                before = rows.load(row)
                t = apply(before, _payment(tx, link), now=now)
                refund = next((e for e in t.effects if isinstance(e, RefundPayment)), None)
                link.outcome = Outcome.APPLIED if refund is None else Outcome.REFUND
                if link.kind == "plan_change":
                    status = "applied" if refund is None else "refunded"
                    rows.set_plan_change_status(tx, order_id, status, now=now)
                if refund is not None:
                    self._refund_due(tx, link, refund.reason, now=now)
                    return [], True
                action = _ACTIONS[link.kind if link.attempt != MANUAL else "manual"]
                _, devices = self._commit(tx, row, before, t, actor=_ACTOR, action=action, now=now)
                return devices, False

        devices, refund = await asyncio.to_thread(work)
        await self._reissue(devices)
        if refund:
            await self.refund(order_id)

    def _refund_due(
        self, tx: Session, link: SubscriptionOrderRow, reason: str, *, now: int
    ) -> None:
        """Audit a payment that cannot be delivered and tell its buyer; the refund follows."""
        order = billing_repo.get_order(tx, link.order_id)
        assert order is not None
        audit.record(
            tx,
            actor=_ACTOR,
            action="subscription.payment_refunded",
            object_type="subscription",
            object_id=link.subscription_id,
            before=None,
            after={"order": order.number, "amount_cents": order.amount_cents, "reason": reason},
            now=now,
        )
        if order.buyer_user_id is None:
            return
        amount = f"{order.amount_cents / 100:.2f} {order.currency}"
        self._notify(
            tx,
            Notify(
                kind="payment_refunded",
                to_user=order.buyer_user_id,
                subject=f"Your payment for order {order.number} is refunded",
                body=f"Order {order.number} ({amount}) for installation "
                f"{order.installation_id} could not be delivered: {reason}. "
                "The payment is given back in full.",
                dedupe_key=f"payment_refunded:{order.id}",
            ),
            now=now,
        )

    async def refund(self, order_id: int) -> bool:
        """Give back an order whose outcome is ``refund``; True once billing has it."""
        now = self._clock()
        try:
            await self._billing.withdraw(order_id, actor=_ACTOR, now=now)
        except (OrderStateConflict, RefundTooLarge):  # given back already (voided, refunded)
            await self.on_reversed(order_id)
        except Exception:  # the provider failed: the renewal job tries again
            _log.exception("refund of order %d failed; retried by the renewal job", order_id)
            return False
        return True

    async def refund_due(self, *, limit: int = 100) -> int:
        """Send every refund that is due and not confirmed (the renewal job's pass)."""

        def due() -> list[int]:
            with self._store.transaction() as tx:
                return rows.refunds_due(tx, limit=limit)

        done = 0
        for order_id in await asyncio.to_thread(due):
            done += await self.refund(order_id)
        return done

    # reversed -------------------------------------------------------------------
    async def on_reversed(self, order_id: int) -> None:
        """Take back what a cancelled, voided or fully refunded order bought; idempotent."""
        now = self._clock()

        def work() -> tuple[list[str], list[int]]:
            with self._store.transaction() as tx:
                link = rows.order_link(tx, order_id, lock=True)
                if link is None:
                    return [], []
                if link.outcome == Outcome.REFUND:
                    link.outcome = Outcome.REFUNDED
                    return [], []
                if link.outcome not in (None, Outcome.APPLIED):
                    return [], []  # refunded, reversed or cancelled already
                row = rows.subscription_of(tx, link.subscription_id, lock=True)
                assert row is not None
                before = rows.load(row)
                applied = link.outcome == Outcome.APPLIED
                link.outcome = Outcome.REVERSED if applied else Outcome.CANCELLED
                purchase = link.kind == "purchase"
                if link.kind == "plan_change":
                    status = "reversed" if applied else "cancelled"
                    rows.set_plan_change_status(tx, order_id, status, now=now)
                if applied and link.kind == "plan_change":
                    event: Event = rows.plan_change_event(tx, order_id, reversed_=True)
                    action = "subscription.plan_change_reversed"
                elif applied:
                    event = PaymentReversed(
                        purchase=purchase,
                        end=link.ends_at,
                        months=link.months,
                        attempt=link.attempt,
                        ref=str(order_id),
                    )
                    action = "subscription.payment_reversed"
                elif purchase:
                    event, action = Abandon(), "subscription.checkout_cancelled"
                else:
                    return [], []  # an unpaid renewal order: nothing was bought
                t = apply(before, event, now=now)
                refunds = []
                if applied and purchase:  # renewals paid on top of a reversed purchase
                    for other in rows.links_of(tx, row.id):
                        if other.kind != "purchase" and other.outcome == Outcome.APPLIED:
                            other.outcome = Outcome.REFUND
                            self._refund_due(tx, other, "the purchase was reversed", now=now)
                            refunds.append(other.order_id)
                if t.state == before:
                    return [], refunds
                _, devices = self._commit(tx, row, before, t, actor=_ACTOR, action=action, now=now)
                return devices, refunds

        devices, refunds = await asyncio.to_thread(work)
        await self._reissue(devices)
        for other_id in refunds:
            await self.refund(other_id)


def _payment(tx: Session, link: SubscriptionOrderRow) -> Event:
    """The lifecycle event of a link's payment."""
    if link.kind == "plan_change":
        return rows.plan_change_event(tx, link.order_id, reversed_=False)
    if link.kind == "purchase":
        return Activate()
    if link.attempt == MANUAL:
        return RenewalPaid(end=link.ends_at, months=link.months)
    return ChargeSucceeded(end=link.ends_at, attempt=link.attempt)
