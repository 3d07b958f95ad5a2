"""Plan changes of a subscription, up or down, mid-term: quoted, then confirmed.

The price is :func:`cloud.subscriptions.rules.plans.plan_change_quote`'s (prorated to
the day). Confirming an **upgrade** places a billing order for the difference; its
link (kind ``plan_change``) and a :class:`~cloud.subscriptions.tables.PlanChangeRow`
are written in the order's transaction, and the new plan takes effect when the
order is paid (:mod:`cloud.subscriptions.settlement` delivers it, or refunds it when
the term it was quoted for is no longer the one running). A declined card changes
nothing. Voiding or refunding that order in full puts the old plan back.

Confirming a **downgrade** refunds the difference through billing, from the newest
paid card charge of the subscription that has more than the difference left to
refund (a refund of a whole charge would reverse what it bought); then the new plan
takes effect at once. When no charge has that much left (it was refunded, or the
term was invoiced) the downgrade is refused and nothing changes; an unsettled
charge cannot be partly refunded, so the downgrade is refused until it settles.

Either way the subscription's devices get new tokens carrying the new plan's
parameters; the term's end and purchaser stay as they were.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.billing import queries as billing_repo
from cloud.billing.errors import (
    ChargeNotSettled,
    OrderStateConflict,
    PaymentProviderError,
    RefundTooLarge,
)
from cloud.billing.orders import Billing
from cloud.billing.rules import OrderLine, OrderStatus, PayWith
from cloud.billing.tables import OrderRow
from cloud.database import Store
from cloud.devices.access import ensure_installation_access
from cloud.errors import N_, InvalidRequest, PaymentDeclined, UpstreamFailed
from cloud.subscriptions import queries as rows
from cloud.subscriptions.errors import NothingRefundable, PlanChangeRefused
from cloud.subscriptions.payer import payment_method, purchaser
from cloud.subscriptions.rules.catalogue import CURRENCY, product
from cloud.subscriptions.rules.lifecycle import (
    ChangePlan,
    RefundPayment,
    Subscription,
    Transition,
    apply,
)
from cloud.subscriptions.rules.plans import PlanChangeQuote, plan_change_quote
from cloud.subscriptions.tables import Outcome, SubscriptionRow
from cloud.subscriptions.views import subscription_view
from common.clock import Clock

__all__ = ["RULE", "PlanChangeResult", "PlanChanges"]

_log = logging.getLogger(__name__)
RULE = (
    "days left = whole UTC days from today to the end of the term; each plan is worth "
    "its yearly price / 365 a day; difference = (new yearly - old yearly) x days left / "
    "365, rounded half away from zero to a cent"
)


class _Scoped(Protocol):
    def __call__(
        self, tx: Session, principal: Principal, sub_id: str, *, write: bool, lock: bool = False
    ) -> SubscriptionRow: ...


class _Commit(Protocol):
    def __call__(
        self,
        tx: Session,
        row: SubscriptionRow | None,
        before: Subscription | None,
        t: Transition,
        *,
        actor: Principal | str,
        action: str,
        now: int,
    ) -> tuple[SubscriptionRow, list[str]]: ...


@dataclass(frozen=True, slots=True)
class PlanChangeResult:
    """A confirmed plan change: the quote it was made at, the subscription after it, the
    order charged (upgrade) or refunded from (downgrade) and its status."""

    quote: PlanChangeQuote
    subscription: dict[str, Any]
    order_id: int | None
    order_status: str | None
    refunded_cents: int = 0


class PlanChanges:
    """Quotes and confirms plan changes (the subscriptions service owns one)."""

    def __init__(
        self,
        store: Store,
        billing: Billing,
        *,
        clock: Clock,
        scoped: _Scoped,
        commit: _Commit,
        reissue: Callable[[Sequence[str]], Awaitable[None]],
    ) -> None:
        self._store = store
        self._billing = billing
        self._clock = clock
        self._scoped = scoped
        self._commit = commit
        self._reissue = reissue

    def quote(self, principal: Principal, sub_id: str, to_code: str) -> PlanChangeQuote:
        """What changing to ``to_code`` costs today; nothing is stored.

        Raises:
            UnknownSubscription, UnknownProduct, Forbidden, Blacklisted, PlanChangeRefused.
        """
        now = self._clock()
        to = product(to_code)
        with self._store.transaction() as tx:
            row = self._scoped(tx, principal, sub_id, write=True)
            return plan_change_quote(rows.load(row), to, now=now)

    async def change(
        self,
        principal: Principal,
        sub_id: str,
        to_code: str,
        *,
        pay_with: str | None,
        card_token: str | None,
    ) -> PlanChangeResult:
        """Confirm the change to ``to_code`` at today's quote (see the module docstring).

        Raises:
            UnknownSubscription, UnknownProduct, Forbidden, Blacklisted,
            PlanChangeRefused: not active, same plan, another service, an upgrade awaiting
                payment, or an unsettled charge (downgrade).
            NothingRefundable: a downgrade no paid card charge can give back.
            PaymentDeclined: the upgrade's card was declined (nothing changed).
        """
        now = self._clock()
        to = product(to_code)

        def check() -> tuple[Subscription, PlanChangeQuote, int, str]:
            with self._store.transaction() as tx:
                row = self._scoped(tx, principal, sub_id, write=True)
                sub = rows.load(row)
                quote = plan_change_quote(sub, to, now=now)
                waiting = rows.plan_change_waiting(tx, sub_id)
                if waiting is not None:
                    raise PlanChangeRefused(
                        N_(
                            "a change to %(product)s awaits payment (order %(order)s): pay or "
                            "cancel that order first"
                        ),
                        product=waiting.to_code,
                        order=str(waiting.order_id),
                    )
                buyer = purchaser(principal, None, default=row.purchaser_id)
                how = payment_method(tx, buyer, pay_with or row.pay_with)
                return sub, quote, buyer, how

        sub, quote, buyer, how = await asyncio.to_thread(check)
        if quote.difference_cents > 0:
            return await self._upgrade(principal, sub, quote, buyer, how, card_token, now=now)
        return await self._downgrade(principal, quote, now=now)

    async def change_cameras(
        self,
        principal: Principal,
        installation_id: str,
        to_code: str,
        *,
        device_ids: Sequence[str] | None,
        pay_with: str | None,
        card_token: str | None,
    ) -> list[PlanChangeResult]:
        """ "Apply desired subscription to all cameras": change the plan of every camera of
        the installation that has one of this service (or of the listed ones); cameras on
        that plan already are left as they are. Every change is quoted before the first
        is made, so a refusal (a camera without a plan, a plan not active) changes nothing;
        each change then has its own order or refund.

        Raises:
            as :meth:`change`; InvalidRequest: no camera to change.
        """
        now = self._clock()
        to = product(to_code)

        def plan() -> list[str]:
            with self._store.transaction() as tx:
                ensure_installation_access(tx, principal, installation_id, write=True)
                subs = {
                    r.scope.removeprefix("device:"): r
                    for r in rows.subscriptions_of(tx, installation_id)
                    if r.service == to.feature and r.scope.startswith("device:")
                }
                chosen = list(subs) if device_ids is None else list(dict.fromkeys(device_ids))
                out = []
                for device_id in chosen:
                    row = subs.get(device_id)
                    if row is None:
                        raise PlanChangeRefused(
                            N_("device %(device)s has no %(feature)s plan: buy one first"),
                            device=device_id,
                            feature=to.feature,
                        )
                    if row.product_code != to.code:
                        plan_change_quote(rows.load(row), to, now=now)  # refuses early
                        out.append(row.id)
                if not out:
                    raise InvalidRequest(
                        N_("every camera is on %(product)s already: nothing to change"),
                        product=to.code,
                    )
                return out

        results = []
        for sub_id in await asyncio.to_thread(plan):
            results.append(
                await self.change(
                    principal, sub_id, to.code, pay_with=pay_with, card_token=card_token
                )
            )
        return results

    # upgrade: charged, applied when paid ---------------------------------------------
    async def _upgrade(
        self,
        principal: Principal,
        sub: Subscription,
        quote: PlanChangeQuote,
        buyer: int,
        how: str,
        card_token: str | None,
        *,
        now: int,
    ) -> PlanChangeResult:
        card = card_token if how == PayWith.CARD else None
        to, was = quote.to_product, quote.from_product

        def prepare(session: Session, order: OrderRow) -> None:
            rows.add_order_link(
                session,
                order_id=order.id,
                subscription_id=sub.id,
                kind="plan_change",
                ends_at=quote.ends_at,
                attempt=0,
                months=0,
                now=now,
            )
            rows.add_plan_change(session, quote, order_id=order.id, status="pending", now=now)
            _audit(session, principal, sub.id, quote, "subscription.plan_change_ordered", now)

        order = await self._billing.place_order(
            kind="purchase",
            buyer=buyer,
            installation_id=sub.installation_id,
            lines=[
                OrderLine(
                    to.code,
                    f"{to.name}, change from {was.code} for {quote.days_left} days",
                    0,
                    quote.difference_cents,
                )
            ],
            pay_with=how,
            card_token=card,
            idempotency_key=f"plan:{sub.id}:{to.code}:{quote.ends_at}:{now}",
            now=now,
            prepare=prepare,
        )
        if order.status is OrderStatus.FAILED:

            def declined() -> None:
                with self._store.transaction() as tx:
                    self._billing.cancel_unpaid(tx, order.order_id, actor=principal, now=now)
                    rows.set_plan_change_status(tx, order.order_id, "cancelled", now=now)
                    link = rows.order_link(tx, order.order_id, lock=True)
                    if link is not None and link.outcome is None:
                        link.outcome = Outcome.CANCELLED

            try:
                await asyncio.to_thread(declined)
            except OrderStateConflict:  # being paid by someone at this moment
                pass
            raise PaymentDeclined(
                N_(
                    "the card was declined (order %(number)s): the plan was not changed; "
                    "try another card"
                ),
                number=order.number,
            )
        if order.status is OrderStatus.SUCCEED:
            await self._billing.run_callbacks(order.order_id, now=now)
        view = await asyncio.to_thread(self._view, sub.id)
        return PlanChangeResult(quote, view, order.order_id, str(order.status))

    # downgrade (or same price): refunded, applied at once ------------------------------
    async def _downgrade(
        self, principal: Principal, quote: PlanChangeQuote, *, now: int
    ) -> PlanChangeResult:
        amount = -quote.difference_cents
        source = None
        if amount > 0:
            source = await asyncio.to_thread(self._refundable, quote, amount)
            try:
                await self._billing.refunds.refund(
                    source, amount_cents=amount, actor=principal, now=now
                )
            except ChargeNotSettled as exc:
                raise PlanChangeRefused(
                    N_(
                        "the payment of this subscription has not settled yet, so part of it "
                        "cannot be refunded: change the plan again once it has (usually the "
                        "next day)"
                    )
                ) from exc
            except (RefundTooLarge, OrderStateConflict) as exc:
                raise _nothing_refundable(amount) from exc
            except PaymentProviderError as exc:  # nothing was refunded nor queued
                raise UpstreamFailed(
                    N_("the payment provider failed: the plan was not changed; try again")
                ) from exc

        def work() -> tuple[list[str], dict[str, Any]]:
            with self._store.transaction() as tx:
                row = self._scoped(tx, principal, quote.subscription_id, write=True, lock=True)
                before = rows.load(row)
                event = ChangePlan(
                    to=quote.to_product,
                    end=quote.ends_at,
                    ref=f"{quote.to_product.code}:{now}",
                    cents=quote.difference_cents,
                )
                t = apply(before, event, now=now)
                changed = not any(isinstance(e, RefundPayment) for e in t.effects)
                # the refund went out: recorded even when the state moved on meanwhile
                status = "refunded" if amount > 0 else "applied"
                rows.add_plan_change(
                    tx,
                    quote,
                    order_id=source,
                    status=status if changed else "refunded-only",
                    now=now,
                )
                _audit(tx, principal, quote.subscription_id, quote, "subscription.plan_change", now)
                devices: list[str] = []
                if changed:
                    row, devices = self._commit(
                        tx,
                        row,
                        before,
                        t,
                        actor=principal,
                        action="subscription.plan_changed",
                        now=now,
                    )
                return devices, subscription_view(row)

        devices, view = await asyncio.to_thread(work)
        await self._reissue(devices)
        return PlanChangeResult(
            quote,
            view,
            source,
            None if source is None else str(OrderStatus.SUCCEED),
            refunded_cents=amount,
        )

    def _refundable(self, quote: PlanChangeQuote, amount: int) -> int:
        """The newest paid card order of the subscription with more than ``amount`` left."""
        with self._store.transaction() as tx:
            for link in reversed(rows.links_of(tx, quote.subscription_id)):
                if link.outcome != Outcome.APPLIED:
                    continue
                order = billing_repo.get_order(tx, link.order_id)
                charge = billing_repo.charge_of(tx, link.order_id)
                if order is None or charge is None or order.pay_with != PayWith.CARD:
                    continue
                if order.status != OrderStatus.SUCCEED:
                    continue
                left = charge.amount_cents - billing_repo.refunded_cents(tx, charge.id)
                if left > amount:
                    return link.order_id
        raise _nothing_refundable(amount)

    def _view(self, sub_id: str) -> dict[str, Any]:
        with self._store.transaction() as tx:
            row = rows.subscription_of(tx, sub_id)
            assert row is not None
            return subscription_view(row)


def _nothing_refundable(amount: int) -> NothingRefundable:
    return NothingRefundable(
        N_(
            "no paid card charge of this subscription has %(amount)s left to refund (it was "
            "refunded already, or the term was invoiced): the plan was not changed; keep it "
            "to the renewal or ask for a credit"
        ),
        amount=f"{amount / 100:.2f} {CURRENCY}",
    )


def _audit(
    session: Session,
    actor: Principal | str,
    sub_id: str,
    quote: PlanChangeQuote,
    action: str,
    now: int,
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="subscription",
        object_id=sub_id,
        before={"product": quote.from_product.code},
        after={
            "product": quote.to_product.code,
            "days_left": quote.days_left,
            "difference_cents": quote.difference_cents,
        },
        now=now,
    )
