"""Renewal charges placed as orders: the renewal job's and an operator's "bill now".

:meth:`RenewalCharger.place_ticked` places what the renewal job's ticks sent, from the
database rather than from one worker's list (TTecomm: one renewal order and one invoice
a month per purchaser, however many workers ticked parts of that month). For each
purchaser-month it ticked, the worker gathers every charge that is in flight and on no
order yet (:func:`~cloud.subscriptions.queries.unplaced_charges`: whoever ticked it) and
consolidates them (:func:`~cloud.subscriptions.rules.renewals.consolidate`). The order's
transaction then holds that purchaser-month's subscriptions
(:func:`~cloud.subscriptions.queries.hold_month`: waits for a sweep still holding some
of them) and gathers again: if the order is no longer what the month consolidates to (a
sweep committed more of the month, another worker placed some), nothing is written and
the worker gathers again; else the order and its links are written before any charge.
A charge key is on one order at most (unique), so each subscription is charged once per
attempt; a worker that finds every charge placed places nothing. A charge ticked after
its month's order was placed (and charged) is the one case of a second order that
month: it cannot be added to a charge already sent. A charge re-sent after its lease
(its answer was not applied) resumes its order instead.

:meth:`RenewalCharger.place` places one consolidated renewal order
(:class:`~cloud.subscriptions.rules.renewals.RenewalOrder`: one line and link per
subscription, each link holding its charge's own key, written in the order's
transaction before any charge) and applies the answer: paid, every line is
delivered (or refunded) through the on-paid callbacks; declined, every line's
subscription takes the decline (so the whole order is retried on the rule's
retry day); timed out, the lease and billing's reconcile settle it.

:meth:`RenewalCharger.force_bill` is the operator's order action: the current
cycle charged now (:func:`~cloud.subscriptions.rules.renewals.force_bill`
decides), committed as in flight before the order is placed, so it is never
charged twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.billing import credit
from cloud.billing import queries as billing_queries
from cloud.billing.orders import OrderResult
from cloud.billing.rules import OrderLine, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.devices import queries as device_queries
from cloud.devices.access import ensure_installation_access
from cloud.errors import N_, PaymentDeclined, UnknownSubscription
from cloud.subscriptions import queries as rows
from cloud.subscriptions.rules.calendar import iso
from cloud.subscriptions.rules.lifecycle import Charge, ChargeFailed, Subscription
from cloud.subscriptions.rules.renewals import (
    BillingDateChange,
    Due,
    RenewalOrder,
    billing_date_change,
    consolidate,
    force_bill,
)
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.settlement import MANUAL
from cloud.subscriptions.tables import SubscriptionRow
from cloud.subscriptions.views import subscription_view

__all__ = ["BilledNow", "DateMoved", "RenewalCharger"]

ACTOR = "system:renewals"
_GATHERS = 5  # a purchaser-month gathered at most this often by one placing
_log = logging.getLogger(__name__)
_Declined = tuple[str, int, int]  # (subscription, end, attempt) of a declined charge


@dataclass(frozen=True, slots=True)
class Placed:
    """An order the renewal job placed, or found placed and applied the answer of again."""

    order_id: int
    status: OrderStatus
    resumed: bool = False


class _MonthMoved(Exception):
    """The purchaser-month's unplaced charges are no longer the order's: gather again."""


@dataclass(frozen=True, slots=True)
class BilledNow:
    """What an operator's "bill now" did: the order and the subscription after it."""

    order_id: int
    order_status: OrderStatus
    amount_cents: int
    subscription: dict[str, Any]


class RenewalCharger:
    """Places renewal orders for the subscriptions service (safe in every worker)."""

    def __init__(self, service: SubscriptionService) -> None:
        self._service = service

    async def place_ticked(self, dues: Sequence[Due], *, now: int) -> list[Placed]:
        """Place the orders of the charges ``dues`` (what this worker's ticks sent), from the
        database (see the module docstring): each order it placed, and each it found
        placed already and applied the answer of again (``resumed``: placed by another
        worker, or in an earlier pass). A failure is logged: the lease sends that charge
        again on a later pass."""
        keys = [d.charge.idempotency_key for d in dues]

        def placed_orders() -> dict[str, int]:
            with self._service.store.transaction() as tx:
                return rows.orders_of_charge_keys(tx, keys)

        placed = await asyncio.to_thread(placed_orders)
        results: list[Placed] = []
        for order_id in sorted(set(placed.values())):  # re-sent after the lease
            try:
                results.append(Placed(*await self._resume(order_id, now=now), resumed=True))
            except Exception:
                _log.exception("renewal order %s could not be resumed", order_id)
        months = {(d.charge.buyer, d.charge.end) for d in dues}
        for buyer, end in sorted(months):
            try:
                results.extend(await self._place_month(buyer, end, now=now))
            except Exception:
                _log.exception("renewals of purchaser %s ending %s failed", buyer, iso(end))
        return results

    async def _place_month(self, buyer: int, end: int, *, now: int) -> list[Placed]:
        def gather() -> tuple[RenewalOrder, ...]:
            with self._service.store.transaction() as tx:
                return consolidate(rows.unplaced_charges(tx, buyer=buyer, end=end))

        results: list[Placed] = []
        for _ in range(_GATHERS):
            try:
                for order in await asyncio.to_thread(gather):
                    placed = await self._place_order(order, now=now, whole_month=True)
                    if placed.replayed:  # placed by another worker: it applies the answer
                        continue
                    await self._apply(placed, order, now=now)
                    results.append(Placed(placed.order_id, placed.status))
            except _MonthMoved:
                continue
            return results
        _log.warning("renewals of purchaser %s ending %s kept moving: next pass", buyer, iso(end))
        return results

    async def place(self, order: RenewalOrder, *, now: int) -> tuple[int, OrderStatus]:
        """Place one consolidated renewal order and apply its answer; (order id, status)."""
        placed = await self._place_order(order, now=now, whole_month=False)
        await self._apply(placed, order, now=now)
        return placed.order_id, placed.status

    async def _place_order(
        self, order: RenewalOrder, *, now: int, whole_month: bool
    ) -> OrderResult:
        """The order placed (or replayed) and charged, its links written before the charge.

        ``whole_month``: written only if it is what its purchaser-month's unplaced charges
        consolidate to, checked with the month held; else _MonthMoved (nothing written).
        """

        def link(session: Session, row: OrderRow) -> None:
            if whole_month:
                rows.hold_month(session, buyer=order.buyer, end=order.end)
                now_due = consolidate(
                    rows.unplaced_charges(session, buyer=order.buyer, end=order.end)
                )
                if order.idempotency_key not in {o.idempotency_key for o in now_due}:
                    raise _MonthMoved(order.idempotency_key)
            lines = billing_queries.lines_of(session, row.id)
            # the items' lines first, in order; a "Credit applied" line may follow
            for item, line in zip(order.items, lines[: len(order.items)], strict=True):
                rows.add_order_link(
                    session,
                    order_id=row.id,
                    line_id=line.id,
                    subscription_id=item.sub_id,
                    kind="renewal",
                    ends_at=item.charge.end,
                    attempt=item.charge.attempt,
                    months=item.charge.months,
                    charge_key=item.charge.idempotency_key,
                    now=now,
                )

        return await self._service.billing.place_order(
            kind="renewal",
            buyer=order.buyer,
            installation_id=order.items[0].installation_id,
            lines=[
                OrderLine(
                    item.product_code,
                    item.description,
                    item.charge.months,
                    item.charge.amount_cents,
                    installation_id=item.installation_id,
                )
                for item in order.items
            ],
            pay_with=order.pay_with,
            card_token=order.card_token,
            idempotency_key=order.idempotency_key,
            now=now,
            prepare=link,
            use_credit=True,
        )

    async def _resume(self, order_id: int, *, now: int) -> tuple[int, OrderStatus]:
        """Apply the answer of an order placed before (its charges re-sent after the lease)."""

        def load() -> tuple[OrderStatus, list[_Declined]]:
            with self._service.store.transaction() as tx:
                row = billing_queries.get_order(tx, order_id)
                assert row is not None
                links = rows.order_links(tx, order_id)
                return OrderStatus(row.status), [
                    (lk.subscription_id, lk.ends_at, lk.attempt) for lk in links
                ]

        status, declined = await asyncio.to_thread(load)
        await self._answer(order_id, status, declined, now=now)
        return order_id, status

    async def _apply(self, placed: OrderResult, order: RenewalOrder, *, now: int) -> None:
        declined = [(i.sub_id, i.charge.end, i.charge.attempt) for i in order.items]
        await self._answer(placed.order_id, placed.status, declined, now=now)

    async def _answer(
        self, order_id: int, status: OrderStatus, declined: Sequence[_Declined], *, now: int
    ) -> None:
        """Apply an order's answer: paid, its callbacks; declined, every line's decline."""
        if status is OrderStatus.SUCCEED:  # delivered (or refunded) once per line
            await self._service.billing.run_callbacks(order_id, now=now)
        elif status is OrderStatus.FAILED:  # the whole order is retried, every line
            await self._declined(declined, None, now)
        elif status is OrderStatus.PROCESSING:  # no card on file: it waits for checkout
            await self._declined(declined, "not paid (no card on file)", now)
        # else time out / system processing: the lease and billing's reconcile settle it

    async def _declined(self, items: Sequence[_Declined], reason: str | None, now: int) -> None:
        """Every line's subscription takes the decline, in one transaction (the order was
        declined as a whole: all its lines' declines are written, or none, and a lease
        re-send applies them again; a decline applied already changes nothing)."""
        events = [
            (
                sub_id,
                ChargeFailed(end=end, attempt=attempt)
                if reason is None
                else ChargeFailed(end=end, attempt=attempt, reason=reason),
            )
            for sub_id, end, attempt in items
        ]
        devices = await asyncio.to_thread(
            self._service.apply_events,
            events,
            actor=ACTOR,
            action="subscription.charge_failed",
            now=now,
        )
        await self._service.reissue(devices)

    async def force_bill(self, principal: Principal, sub_id: str, *, now: int) -> BilledNow:
        """Charge the subscription's current cycle now (an operator's action); audited.

        Raises:
            UnknownSubscription (also another customer's), InvalidTransition (not due:
            see :func:`~cloud.subscriptions.rules.renewals.force_bill`).
        """
        service = self._service

        def start() -> Due:
            with service.store.transaction() as tx:
                row = rows.subscription_of(tx, sub_id, lock=True)
                if row is None:
                    raise UnknownSubscription(f"no subscription {sub_id}")
                ensure_installation_access(tx, principal, row.installation_id, write=True)
                before = rows.load(row)
                t = force_bill(before, now=now)
                [charge] = [e for e in t.effects if isinstance(e, Charge)]
                service.commit(
                    tx, row, before, t, actor=principal, action="subscription.force_bill", now=now
                )
                return rows.due_of(row, before, charge)

        due = await asyncio.to_thread(start)
        [order] = consolidate([due])
        order_id, status = await self.place(order, now=now)

        def view() -> dict[str, Any]:
            with service.store.transaction() as tx:
                found = rows.subscription_of(tx, sub_id)
                assert found is not None
                return subscription_view(found)

        return BilledNow(order_id, status, order.amount_cents, await asyncio.to_thread(view))

    async def move_billing_date(
        self, principal: Principal, sub_id: str, *, new_end: int, now: int
    ) -> DateMoved:
        """Move the subscription's renewal date (billing staff); the shifted months are paid
        now (later) or credited to the purchaser (earlier), by
        :func:`~cloud.subscriptions.rules.renewals.billing_date_change`.

        Raises:
            UnknownSubscription, InvalidRequest, InvalidTransition, PaymentDeclined.
        """
        service = self._service

        def start() -> tuple[BillingDateChange, Subscription, SubscriptionRow]:
            with service.store.transaction() as tx:
                row = rows.subscription_of(tx, sub_id, lock=True)
                if row is None:
                    raise UnknownSubscription(f"no subscription {sub_id}")
                ensure_installation_access(tx, principal, row.installation_id, write=True)
                before = rows.load(row)
                change = billing_date_change(before, new_end=new_end, now=now)
                if change.earlier is not None:
                    service.commit(
                        tx,
                        row,
                        before,
                        change.earlier,
                        actor=principal,
                        action="subscription.billing_date",
                        now=now,
                    )
                    credit.grant(
                        tx,
                        row.purchaser_id,
                        amount_cents=change.amount_cents,
                        reason=f"renewal date of {row.id} moved from {iso(before.end)} to "
                        f"{iso(new_end)}: {-change.months} months given up",
                        actor=principal.actor,
                        now=now,
                    )
                return change, before, row

        change, before, row = await asyncio.to_thread(start)
        order_id = status = None
        if change.earlier is not None:
            devices = await asyncio.to_thread(self._devices, before.installation_id)
            await service.reissue(devices)
        else:
            order_id, status = await self._pay_shift(change, before, row, now=now)

        def view() -> dict[str, Any]:
            with service.store.transaction() as tx:
                found = rows.subscription_of(tx, sub_id)
                assert found is not None
                return subscription_view(found)

        charged = change.amount_cents if change.months > 0 else 0
        return DateMoved(
            months=change.months,
            charged_cents=charged,
            credited_cents=0 if charged else change.amount_cents,
            order_id=order_id,
            order_status=None if status is None else str(status),
            subscription=await asyncio.to_thread(view),
        )

    def _devices(self, installation_id: str) -> list[str]:
        with self._service.store.transaction() as tx:
            return [d.id for d in device_queries.devices_of(tx, installation_id)]

    async def _pay_shift(
        self, change: BillingDateChange, sub: Subscription, row: SubscriptionRow, *, now: int
    ) -> tuple[int, OrderStatus]:
        """The added months as a renewal order of the purchaser's (card on file, or invoice);
        applied like a renewal of those months when paid."""

        def link(session: Session, order: OrderRow) -> None:
            rows.add_order_link(
                session,
                order_id=order.id,
                subscription_id=sub.id,
                kind="renewal",
                ends_at=sub.end,
                attempt=MANUAL,
                months=change.months,
                now=now,
            )

        item = sub.product
        placed = await self._service.billing.place_order(
            kind="renewal",
            buyer=row.purchaser_id,
            installation_id=sub.installation_id,
            lines=[
                OrderLine(
                    item.code,
                    f"{item.name}, renewal date moved {change.months} months later",
                    change.months,
                    change.amount_cents,
                )
            ],
            pay_with=row.pay_with,
            card_token=row.card_token if row.pay_with == "card" else None,
            idempotency_key=f"billing-date:{sub.id}:{sub.end}:{change.months}",
            now=now,
            prepare=link,
        )
        if placed.status is OrderStatus.FAILED:
            raise PaymentDeclined(
                N_(
                    "the card on file was declined (order %(number)s): the renewal date did "
                    "not move"
                ),
                number=placed.number,
            )
        if placed.status is OrderStatus.SUCCEED:
            await self._service.billing.run_callbacks(placed.order_id, now=now)
        return placed.order_id, placed.status


@dataclass(frozen=True, slots=True)
class DateMoved:
    """A renewal date moved: by how many months, what it cost or credited, the order."""

    months: int
    charged_cents: int
    credited_cents: int
    order_id: int | None
    order_status: str | None
    subscription: dict[str, Any]
