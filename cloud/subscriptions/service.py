"""Subscriptions service: purchase, renew, deactivate, reactivate, and payments that arrive later.

Every change is one transaction: the subscription row is locked (``FOR
UPDATE``; the row's ``version`` catches a stale write), the pure rule
(:mod:`cloud.domain.lifecycle`) decides, and the new state, its audit entry,
its notifications (outbox, deduplicated) and the installation's service grant
(``source="subscription"``, ``valid_until`` = the paid-through end) commit
together. After the commit the installation's devices get new tokens through
the :class:`~cloud.issuing.IssuingService`, so they follow on their own.

Orders go through :class:`cloud.billing.orders.Billing` *before* the
subscription transaction, and are validated before that: a refused request
changes nothing. Money moves only through orders with idempotency keys.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.access import ensure_installation_access
from cloud.accounts.users import user_contact
from cloud.apikeys import Principal
from cloud.billing.lifecycle import OrderLine, OrderStatus
from cloud.billing.orders import Billing, OrderResult
from cloud.domain import GrantStatus
from cloud.domain.catalogue import product, term_price
from cloud.domain.lifecycle import (
    Activate,
    ChargeSucceeded,
    Deactivate,
    EndService,
    Event,
    GrantService,
    Notify,
    Reactivate,
    Renew,
    Status,
    Subscription,
    Transition,
    apply,
    purchase,
)
from cloud.errors import (
    CloudError,
    PaymentDeclined,
    SubscriptionExists,
    UnknownSubscription,
)
from cloud.issuing import IssuingService
from cloud.notifications import enqueue
from cloud.ports import Clock
from cloud.store import Store, Tx
from cloud.store import subscriptions as rows
from cloud.store.subscriptions import SubscriptionRow
from cloud.subscriptions.payer import payment_method, purchaser
from cloud.subscriptions.views import PurchaseResult, subscription_view

__all__ = ["SubscriptionService"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
GRANT_SOURCE = "subscription"
MANUAL = -1  # ``attempt`` of an order link for a renewal the user asked for


class SubscriptionService:
    """Applies subscription events with their orders, audit, notifications and grants."""

    def __init__(
        self, store: Store, issuing: IssuingService, billing: Billing, *, clock: Clock
    ) -> None:
        self.store = store
        self.issuing = issuing
        self.billing = billing
        self.clock = clock
        billing.on_paid(self.on_order_paid)

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        return await asyncio.to_thread(work)

    # the one place a transition is persisted ---------------------------------------
    def commit(
        self,
        tx: Tx,
        row: SubscriptionRow | None,
        before: Subscription | None,
        t: Transition,
        *,
        actor: Principal | str,
        action: str,
        now: int,
        pay: tuple[str, str | None] | None = None,
    ) -> tuple[SubscriptionRow, list[str]]:
        """Save ``t.state`` with its audit entry and effects; returns the row and devices to
        re-issue for. Charges are *not* handled here: the caller places them after commit."""
        session = tx.session
        row = rows.save(session, t.state, now=now, row=row, pay=pay)
        audit.record(
            session,
            actor=actor,
            action=action,
            object_type="subscription",
            object_id=t.state.id,
            before=None if before is None else rows.snapshot(before),
            after=rows.snapshot(t.state),
            now=now,
        )
        grants_changed = False
        for effect in t.effects:
            if isinstance(effect, GrantService):
                tx.upsert_grant(
                    installation_id=t.state.installation_id,
                    feature=effect.feature,
                    until=effect.until,
                    params=dict(effect.params),
                    source=GRANT_SOURCE,
                    now=now,
                )
                grants_changed = True
            elif isinstance(effect, EndService):
                tx.end_grant(
                    installation_id=t.state.installation_id,
                    feature=effect.feature,
                    status=GrantStatus.ENDED,
                    now=now,
                )
                grants_changed = True
            elif isinstance(effect, Notify):
                _notify(session, effect, now=now)
        devices = [d.id for d in tx.devices_of(t.state.installation_id)] if grants_changed else []
        return row, devices

    async def reissue(self, device_ids: Sequence[str]) -> None:
        if device_ids:
            await self.issuing.reissue(list(device_ids))

    def apply_event(
        self,
        sub_id: str,
        event: Event,
        *,
        actor: Principal | str,
        action: str,
        now: int,
        link: Callable[[Tx, SubscriptionRow], None] | None = None,
        expect: Callable[[SubscriptionRow], bool] | None = None,
    ) -> tuple[SubscriptionRow, list[str], Transition]:
        with self.store.transaction() as tx:
            row = rows.subscription_of(tx.session, sub_id, lock=True)
            if row is None:
                raise UnknownSubscription(f"no subscription {sub_id}")
            before = rows.load(row)
            if expect is not None and not expect(row):
                return row, [], Transition(before)
            t = apply(before, event, now=now)
            if link is not None:
                link(tx, row)
            if t.state == before:
                return row, [], t
            row, devices = self.commit(tx, row, before, t, actor=actor, action=action, now=now)
            return row, devices, t

    # reads ----------------------------------------------------------------------
    def get(self, principal: Principal, sub_id: str) -> dict[str, Any]:
        with self.store.transaction() as tx:
            return subscription_view(self._scoped(tx, principal, sub_id, write=False))

    def list_for(self, principal: Principal, installation_id: str) -> list[dict[str, Any]]:
        with self.store.transaction() as tx:
            ensure_installation_access(tx.session, principal, installation_id, write=False)
            return [
                subscription_view(r) for r in rows.subscriptions_of(tx.session, installation_id)
            ]

    # purchase -------------------------------------------------------------------
    async def purchase(
        self,
        principal: Principal,
        *,
        installation_id: str,
        product_code: str,
        term_months: int | None,
        pay_with: str | None,
        card_token: str | None,
        start: int | None,
        purchaser_id: int | None = None,
    ) -> PurchaseResult:
        """Buy a service for an installation.

        Raises:
            UnknownProduct, BadTerm, InvalidRequest: refused input (nothing changed).
            UnknownInstallation, Forbidden, Blacklisted: scope and role.
            SubscriptionExists: the installation already has this service.
            PaymentDeclined: the card was declined (nothing bought).
        """
        now = self.clock()
        item = product(product_code)
        term = term_months or item.default_term_months
        # the rule first: a bad term or date is refused before any I/O
        purchase(
            sub_id="check",
            installation_id=installation_id,
            product=item,
            purchaser=0,
            term_months=term,
            now=now,
            paid=True,
            start=start,
        )

        def check() -> tuple[str, int, str]:
            with self.store.transaction() as tx:
                ensure_installation_access(tx.session, principal, installation_id, write=True)
                buyer = purchaser(principal, purchaser_id)
                how = payment_method(tx.session, buyer, pay_with)
                existing = rows.subscription_for_service(tx.session, installation_id, item.feature)
                if existing is not None and existing.status is not Status.EXPIRED:
                    raise SubscriptionExists(
                        f"installation {installation_id} already has {item.feature} "
                        f"({existing.product_code}, {existing.id}): renew or reactivate it"
                    )
                sub_id = existing.id if existing is not None else f"sub_{secrets.token_hex(8)}"
                return sub_id, buyer, how

        sub_id, buyer, how = await self._in_thread(check)
        order = await self.billing.place_order(
            kind="purchase",
            buyer=buyer,
            installation_id=installation_id,
            lines=[OrderLine(item.code, item.name, term, term_price(item, term))],
            pay_with=how,
            card_token=card_token if how == "card" else None,
            idempotency_key=f"purchase:{sub_id}:{now}",
            now=now,
        )
        if order.status not in (OrderStatus.SUCCEED, OrderStatus.PROCESSING):
            raise PaymentDeclined(
                f"the card was declined or not answered (order {order.number}: "
                f"{order.status}): nothing was bought; try another card"
            )
        paid = order.status is OrderStatus.SUCCEED

        def save() -> tuple[dict[str, Any], list[str]]:
            with self.store.transaction() as tx:
                tx.installation(installation_id, lock=True)
                existing = rows.subscription_for_service(
                    tx.session, installation_id, item.feature, lock=True
                )
                if existing is not None and existing.status is not Status.EXPIRED:
                    raise SubscriptionExists(
                        f"installation {installation_id} got {item.feature} at the same moment"
                    )
                t = purchase(
                    sub_id=sub_id,
                    installation_id=installation_id,
                    product=item,
                    purchaser=buyer,
                    term_months=term,
                    now=now,
                    paid=paid,
                    start=start,
                )
                before = None if existing is None else rows.load(existing)
                row, devices = self.commit(
                    tx,
                    existing,
                    before,
                    t,
                    actor=principal,
                    action="subscription.purchase",
                    now=now,
                    pay=(how, card_token if how == "card" else None),
                )
                rows.add_order_link(
                    tx.session,
                    order_id=order.order_id,
                    subscription_id=sub_id,
                    kind="purchase",
                    ends_at=t.state.end,
                    attempt=0,
                    months=term,
                    now=now,
                )
                tx.session.flush()
                return subscription_view(row), devices

        try:
            view, devices = await self._in_thread(save)
        except SubscriptionExists:
            await self._undo_order(order, now=now)
            raise
        await self.reissue(devices)
        _log.info("subscription %s: %s bought %s (%s)", sub_id, buyer, item.code, order.status)
        return PurchaseResult(
            view, order.order_id, str(order.status), order.amount_cents if paid else 0
        )

    async def _undo_order(self, order: OrderResult, *, now: int) -> None:
        """Another purchase of the service won the race after our order was placed."""
        actor = "system:subscriptions"
        try:
            if order.status is OrderStatus.PROCESSING:
                await self.billing.cancel(order.order_id, actor=actor, now=now)
            elif order.status is OrderStatus.SUCCEED and order.amount_cents > 0:
                try:
                    await self.billing.refunds.void(
                        order.order_id, amount_cents=None, actor=actor, now=now
                    )
                except CloudError:  # settled already, or an invoice: refund it
                    await self.billing.refunds.refund(
                        order.order_id, amount_cents=None, actor=actor, now=now
                    )
        except Exception:
            _log.exception("order %s of a lost purchase race: reverse it by hand", order.number)

    # renew, deactivate, reactivate ----------------------------------------------
    async def renew(
        self,
        principal: Principal,
        sub_id: str,
        *,
        months: int,
        pay_with: str | None,
        card_token: str | None,
    ) -> PurchaseResult:
        """Pay ``months`` more now (1-60); after expiry this is the late payment.

        Raises:
            BadTerm, InvalidTransition, UnknownSubscription, Forbidden, PaymentDeclined.
        """
        now = self.clock()

        def check() -> tuple[Subscription, int, str]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True)
                sub = rows.load(row)
                apply(sub, Renew(months=months, by=0), now=now)  # refuses before any order
                buyer = purchaser(principal, None, default=row.purchaser_id)
                return sub, buyer, payment_method(tx.session, buyer, pay_with or row.pay_with)

        sub, buyer, how = await self._in_thread(check)
        item = sub.product
        order = await self.billing.place_order(
            kind="renewal",
            buyer=buyer,
            installation_id=sub.installation_id,
            lines=[OrderLine(item.code, f"{item.name}, renewal", months, term_price(item, months))],
            pay_with=how,
            card_token=card_token if how == "card" else None,
            idempotency_key=f"renew:{sub.id}:{sub.end}:{months}",
            now=now,
        )
        if order.status not in (OrderStatus.SUCCEED, OrderStatus.PROCESSING):
            raise PaymentDeclined(
                f"the card was declined or not answered (order {order.number}: "
                f"{order.status}): nothing was renewed; try another card"
            )
        row, devices = await self._paid_renewal(
            sub.id, order, months=months, end=sub.end, actor=principal, now=now
        )
        await self.reissue(devices)
        return PurchaseResult(subscription_view(row), order.order_id, str(order.status))

    async def _paid_renewal(
        self,
        sub_id: str,
        order: OrderResult,
        *,
        months: int,
        end: int,
        actor: Principal | str,
        now: int,
    ) -> tuple[SubscriptionRow, list[str]]:
        paid = order.status is OrderStatus.SUCCEED

        def link(tx: Tx, row: SubscriptionRow) -> None:
            rows.add_order_link(
                tx.session,
                order_id=order.order_id,
                subscription_id=sub_id,
                kind="renewal",
                ends_at=end,
                attempt=MANUAL,
                months=months,
                now=now,
            )

        def work() -> tuple[SubscriptionRow, list[str]]:
            if not paid:  # awaiting checkout: only remember what the order is for
                with self.store.transaction() as tx:
                    row = rows.subscription_of(tx.session, sub_id, lock=True)
                    assert row is not None
                    link(tx, row)
                    return row, []
            row, devices, _ = self.apply_event(
                sub_id,
                Renew(months=months, by=0),
                actor=actor,
                action="subscription.renew",
                now=now,
                link=link,
                expect=lambda r: r.ends_at == end,
            )
            return row, devices

        return await self._in_thread(work)

    async def deactivate(self, principal: Principal, sub_id: str) -> dict[str, Any]:
        """No next renewal; the service runs to its end."""
        return await self._simple(
            principal, sub_id, "subscription.deactivate", lambda by: Deactivate(by=by)
        )

    async def reactivate(
        self, principal: Principal, sub_id: str, *, pay_with: str | None, card_token: str | None
    ) -> PurchaseResult:
        """Renew again; the reactivating user becomes the purchaser, with 0 due now."""
        now = self.clock()

        def work() -> tuple[SubscriptionRow, int]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True, lock=True)
                buyer = purchaser(principal, None, default=row.purchaser_id)
                how = payment_method(tx.session, buyer, pay_with)
                before = rows.load(row)
                t = apply(before, Reactivate(by=buyer), now=now)
                if t.state == before:
                    return row, 0
                row, _ = self.commit(
                    tx,
                    row,
                    before,
                    t,
                    actor=principal,
                    action="subscription.reactivate",
                    now=now,
                    pay=(how, card_token if how == "card" else None),
                )
                return row, t.due_now_cents

        row, due = await self._in_thread(work)
        return PurchaseResult(subscription_view(row), due_now_cents=due)

    async def _simple(
        self, principal: Principal, sub_id: str, action: str, make: Callable[[int], Event]
    ) -> dict[str, Any]:
        now = self.clock()

        def work() -> dict[str, Any]:
            with self.store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True, lock=True)
                before = rows.load(row)
                t = apply(before, make(principal.user_id or 0), now=now)
                if t.state != before:
                    row, _ = self.commit(
                        tx, row, before, t, actor=principal, action=action, now=now
                    )
                return subscription_view(row)

        return await self._in_thread(work)

    def _scoped(
        self, tx: Tx, principal: Principal, sub_id: str, *, write: bool, lock: bool = False
    ) -> SubscriptionRow:
        row = rows.subscription_of(tx.session, sub_id, lock=lock)
        if row is None:
            raise UnknownSubscription(f"no subscription {sub_id}")
        ensure_installation_access(tx.session, principal, row.installation_id, write=write)
        return row

    # payments that arrive after the request ---------------------------------------
    async def on_order_paid(self, order_id: int) -> None:
        """Billing's on-paid callback: a checkout or a late renewal payment. Idempotent."""
        now = self.clock()

        def work() -> list[str]:
            with self.store.transaction() as tx:
                found = rows.order_link(tx.session, order_id)
            if found is None:
                return []  # not a subscription's order
            sub_id, kind, end, attempt, months = (
                found.subscription_id,
                found.kind,
                found.ends_at,
                found.attempt,
                found.months,
            )
            if kind == "purchase":
                event: Event = Activate()
                action = "subscription.activate"
            elif attempt == MANUAL:
                event, action = Renew(months=months, by=0), "subscription.renew"
            else:
                event, action = (
                    ChargeSucceeded(end=end, attempt=attempt),
                    "subscription.charge_paid",
                )
            _, devices, _ = self.apply_event(
                sub_id,
                event,
                actor="system:billing",
                action=action,
                now=now,
                expect=lambda r: kind == "purchase" or r.ends_at == end,
            )
            return devices

        await self.reissue(await self._in_thread(work))


def _notify(session: Session, effect: Notify, *, now: int) -> None:
    contact = user_contact(session, effect.to_user)
    enqueue(
        session,
        kind=effect.kind,
        to=[contact.email],
        subject=effect.subject,
        body=f"Hello {contact.name},\n\n{effect.body}\n",
        now=now,
        dedupe_key=effect.dedupe_key,
    )
