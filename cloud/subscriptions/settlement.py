"""Payments of subscription orders: delivered or refunded, once each; reversals taken back.

Every subscription order has a link per line it pays for
(:class:`~cloud.subscriptions.tables.SubscriptionOrderRow`; a consolidated renewal or a
checkout for several installations has several) written in the order's own transaction,
before any money moves. Each link is settled on its own. Billing's callbacks land here:

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
* on line reversed (one line of an order given back: ``POST /orders/{id}/lines/{line}/
  refund``): only that line's subscription is taken back; the other lines stay. A line
  that cannot be delivered is given back the same way (its amount, not the order's).
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
from cloud.billing.tables import OrderLineRow
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
        billing.on_line_reversed(self.on_line_reversed)
        billing.line_refunded(rows.downgrades_refunded)

    # paid -----------------------------------------------------------------------
    async def on_paid(self, order_id: int) -> None:
        """Deliver the payment of each of the order's lines, or refund it; idempotent.

        Each line (link) is settled on its own: a consolidated renewal renews every
        subscription it can and refunds only the lines it cannot deliver.
        """
        now = self._clock()

        def work() -> tuple[list[str], bool]:
            devices: list[str] = []
            refund = False
            with self._store.transaction() as tx:
                for link in rows.order_links(tx, order_id, lock=True):
                    if link.outcome is not None:
                        continue  # settled already
                    row = rows.subscription_of(tx, link.subscription_id, lock=True)
                    assert row is not None  # links cascade with their subscription
                    before = rows.load(row)
                    t = apply(before, _payment(tx, link), now=now)
                    undeliverable = next(
                        (e for e in t.effects if isinstance(e, RefundPayment)), None
                    )
                    link.outcome = Outcome.APPLIED if undeliverable is None else Outcome.REFUND
                    if link.kind == "plan_change":
                        status = "applied" if undeliverable is None else "refunded"
                        rows.set_plan_change_status(tx, order_id, status, now=now)
                    if undeliverable is not None:
                        self._refund_due(tx, link, undeliverable.reason, now=now)
                        refund = True
                        continue
                    action = _ACTIONS[link.kind if link.attempt != MANUAL else "manual"]
                    _, changed = self._commit(
                        tx, row, before, t, actor=_ACTOR, action=action, now=now
                    )
                    devices.extend(changed)
            return devices, refund

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
        line = _line_of(tx, link)
        amount_cents = order.amount_cents if line is None else line.amount_cents
        installation = order.installation_id if line is None else line.installation_id
        audit.record(
            tx,
            actor=_ACTOR,
            action="subscription.payment_refunded",
            object_type="subscription",
            object_id=link.subscription_id,
            before=None,
            after={"order": order.number, "amount_cents": amount_cents, "reason": reason},
            now=now,
        )
        if order.buyer_user_id is None:
            return
        amount = f"{amount_cents / 100:.2f} {order.currency}"
        whole = line is None or len(billing_repo.lines_of(tx, order.id)) == 1
        self._notify(
            tx,
            Notify(
                kind="payment_refunded",
                to_user=order.buyer_user_id,
                subject=f"Your payment for order {order.number} is refunded",
                body=f"Order {order.number} ({amount}) for installation {installation} could "
                f"not be delivered: {reason}. The payment is given back in full."
                if whole
                else f"The line of order {order.number} for installation {installation} "
                f"({amount}) could not be delivered: {reason}. That amount is given back; "
                "the other lines stay as paid.",
                dedupe_key=f"payment_refunded:{order.id}"
                + ("" if whole else f":{link.subscription_id}"),
            ),
            now=now,
        )

    async def refund(self, order_id: int) -> bool:
        """Give back what of an order is due for refund (outcome ``refund``): the whole order
        when it pays for one subscription, else each such line; True once billing has it."""
        now = self._clock()

        def due() -> tuple[bool, list[int]]:
            with self._store.transaction() as tx:
                links = rows.order_links(tx, order_id)
                whole = len(links) == 1 and len(billing_repo.lines_of(tx, order_id)) == 1
                lines = [
                    link.line_id
                    for link in links
                    if link.outcome == Outcome.REFUND and link.line_id is not None
                ]
                return whole, lines

        whole, lines = await asyncio.to_thread(due)
        if whole:
            try:
                await self._billing.withdraw(order_id, actor=_ACTOR, now=now)
            except (OrderStateConflict, RefundTooLarge):  # given back already (voided, refunded)
                await self.on_reversed(order_id)
            except Exception:  # the provider failed: the renewal job tries again
                _log.exception("refund of order %d failed; retried by the renewal job", order_id)
                return False
            return True
        done = True
        for line_id in lines:
            try:
                await self._billing.reverse_line(order_id, line_id, actor=_ACTOR, now=now)
            except OrderStateConflict:  # given back already (the line, or the whole order)
                await self.on_line_reversed(order_id, line_id)
            except Exception:  # not settled yet, or the provider failed: tried again later
                _log.info("a line refund of order %d waits; the renewal job retries it", order_id)
                done = False
        return done

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
        """Take back what a cancelled, voided or fully refunded order bought, every line of
        it; idempotent."""
        await self._take_back(order_id, None)

    async def on_line_reversed(self, order_id: int, line_id: int) -> None:
        """Take back what one given-back line bought; the order's other lines stay."""
        await self._take_back(order_id, line_id)

    async def _take_back(self, order_id: int, line_id: int | None) -> None:
        now = self._clock()

        def work() -> tuple[list[str], list[int]]:
            devices: list[str] = []
            refunds: list[int] = []
            with self._store.transaction() as tx:
                if line_id is None:
                    links = list(rows.order_links(tx, order_id, lock=True))
                else:
                    found = rows.line_link(tx, order_id, line_id, lock=True)
                    links = [] if found is None else [found]
                for link in links:
                    changed, more = self._reverse_link(tx, link, now=now)
                    devices.extend(changed)
                    refunds.extend(more)
            return devices, refunds

        devices, refunds = await asyncio.to_thread(work)
        await self._reissue(devices)
        for other_id in refunds:
            await self.refund(other_id)

    def _reverse_link(
        self, tx: Session, link: SubscriptionOrderRow, *, now: int
    ) -> tuple[list[str], list[int]]:
        """Take back what one link's payment bought (or end its unpaid checkout)."""
        if link.outcome == Outcome.REFUND:
            link.outcome = Outcome.REFUNDED
            return [], []
        if link.outcome not in (None, Outcome.APPLIED):
            return [], []  # refunded, reversed or cancelled already
        row = rows.subscription_of(tx, link.subscription_id, lock=True)
        assert row is not None
        before = rows.load(row)
        applied = link.outcome == Outcome.APPLIED
        purchase = link.kind == "purchase"
        event: Event
        if link.kind == "plan_change":
            status = "reversed" if applied else "cancelled"
            rows.set_plan_change_status(tx, link.order_id, status, now=now)
            if not applied:
                link.outcome = Outcome.CANCELLED
                return [], []  # an unpaid upgrade: the old plan never left
            event = rows.plan_change_event(tx, link.order_id, reversed_=True)
            action = "subscription.plan_change_reversed"
        elif applied:
            event = PaymentReversed(
                purchase=purchase,
                end=link.ends_at,
                months=link.months,
                attempt=link.attempt,
                ref=str(link.order_id) + ("" if link.line_id is None else f":{link.line_id}"),
            )
            action = "subscription.payment_reversed"
        elif purchase:
            event, action = Abandon(), "subscription.checkout_cancelled"
        else:
            return [], []  # an unpaid renewal order: nothing was bought
        link.outcome = Outcome.REVERSED if applied else Outcome.CANCELLED
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


def _line_of(tx: Session, link: SubscriptionOrderRow) -> OrderLineRow | None:
    return None if link.line_id is None else tx.get(OrderLineRow, link.line_id)


def _payment(tx: Session, link: SubscriptionOrderRow) -> Event:
    """The lifecycle event of a link's payment."""
    if link.kind == "plan_change":
        return rows.plan_change_event(tx, link.order_id, reversed_=False)
    if link.kind == "purchase":
        return Activate()
    if link.attempt == MANUAL:
        return RenewalPaid(end=link.ends_at, months=link.months)
    return ChargeSucceeded(end=link.ends_at, attempt=link.attempt)
