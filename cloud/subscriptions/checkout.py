"""One checkout for several installations: one order, one line per item, one payment.

Everything is checked before any order exists (:func:`~cloud.subscriptions.rules.checkout.
plan_checkout`, then the caller's right to buy for each installation and whether each
already has the service): the first refusal refuses the whole checkout and names the
installation. The pending subscriptions and their links (one per order line) are written
in the order's transaction, before the card is charged, so the payment activates each of
them through the on-paid callbacks (at once, at checkout, or when a lost answer is
reconciled). A declined card cancels the order and takes the pending subscriptions back:
nothing was bought.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.billing import queries as billing_queries
from cloud.billing.errors import OrderStateConflict
from cloud.billing.rules import OrderLine, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.devices.access import ensure_installation_access
from cloud.devices.tables import InstallationRow
from cloud.errors import N_, CloudError, PaymentDeclined, SubscriptionExists
from cloud.subscriptions import queries as rows
from cloud.subscriptions.payer import payment_method, purchaser
from cloud.subscriptions.rules.checkout import CheckoutItem, plan_checkout, refused_for
from cloud.subscriptions.rules.lifecycle import Status, Subscription, purchase
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.views import subscription_view

__all__ = ["CheckedOut", "Checkout"]


@dataclass(frozen=True, slots=True)
class CheckedOut:
    """What a checkout did: its order and the subscriptions it bought (or awaits payment for)."""

    order_id: int
    order_status: str
    due_now_cents: int
    subscriptions: list[dict[str, Any]]


def _snapshot(sub: Subscription | None) -> dict[str, Any] | None:
    return None if sub is None else rows.snapshot(sub)


class Checkout:
    """Buys several installations' services in one order (the subscriptions service's)."""

    def __init__(self, service: SubscriptionService) -> None:
        self._service = service

    async def checkout(
        self,
        principal: Principal,
        items: list[tuple[str, str, int | None]],
        *,
        pay_with: str | None,
        card_token: str | None,
        purchaser_id: int | None = None,
    ) -> CheckedOut:
        """Buy ``(installation_id, product_code, term_months)`` items in one order.

        Raises:
            InvalidRequest, UnknownProduct, BadTerm: refused input, naming the installation.
            UnknownInstallation, Forbidden, Blacklisted: scope and role, naming it.
            SubscriptionExists: an installation has the service already.
            NotConnected, FirmwareTooOld: an installation does not meet a product's
                preconditions (naming it; nothing bought).
            PaymentDeclined: the card was declined (nothing bought; the order is cancelled).
        """
        service = self._service
        now = service.clock()
        planned = plan_checkout(items, now=now)

        def check() -> tuple[int, str, list[str | None]]:
            with service.store.transaction() as tx:
                buyer = purchaser(principal, purchaser_id)
                how = payment_method(tx, buyer, pay_with)
                reuse: list[str | None] = []
                for item in planned:
                    try:
                        ensure_installation_access(tx, principal, item.installation_id, write=True)
                        service.preconditions(tx, item.product, item.installation_id, now=now)
                        existing = rows.subscription_for_service(
                            tx, item.installation_id, item.product.feature
                        )
                        if existing is not None and existing.status is not Status.EXPIRED:
                            raise SubscriptionExists(
                                N_("it has %(feature)s already (%(sub)s): renew or reactivate it"),
                                feature=item.product.feature,
                                sub=existing.id,
                            )
                    except CloudError as exc:
                        raise refused_for(item.installation_id, exc) from exc
                    reuse.append(None if existing is None else existing.id)
                return buyer, how, reuse

        buyer, how, reuse = await asyncio.to_thread(check)
        sub_ids = [found or f"sub_{secrets.token_hex(8)}" for found in reuse]
        card = card_token if how == "card" else None

        def prepare(session: Session, order: OrderRow) -> None:
            lines = billing_queries.lines_of(session, order.id)
            for item, sub_id, reused, line in zip(planned, sub_ids, reuse, lines, strict=True):
                self._pending(session, order, item, sub_id, reused, line.id, buyer, how, card, now)

        digest = hashlib.sha256("\n".join(sorted(sub_ids)).encode()).hexdigest()[:32]
        order = await service.billing.place_order(
            kind="purchase",
            buyer=buyer,
            installation_id=planned[0].installation_id,
            lines=[
                OrderLine(
                    item.product.code,
                    item.product.name,
                    item.term_months,
                    item.amount_cents,
                    installation_id=item.installation_id,
                )
                for item in planned
            ],
            pay_with=how,
            card_token=card,
            idempotency_key=f"checkout:{buyer}:{now}:{digest}",
            now=now,
            prepare=prepare,
        )
        if order.status is OrderStatus.FAILED:
            await asyncio.to_thread(self._declined, order.order_id, sub_ids, reuse, principal, now)
            raise PaymentDeclined(
                N_(
                    "the card was declined (order %(number)s): nothing was bought; try another card"
                ),
                number=order.number,
            )
        if order.status is OrderStatus.SUCCEED:
            await service.billing.run_callbacks(order.order_id, now=now)

        def views() -> list[dict[str, Any]]:
            with service.store.transaction() as tx:
                found = [rows.subscription_of(tx, s) for s in sub_ids]
                return [subscription_view(r) for r in found if r is not None]

        paid = order.status is OrderStatus.SUCCEED
        return CheckedOut(
            order.order_id,
            str(order.status),
            order.amount_cents if paid else 0,
            await asyncio.to_thread(views),
        )

    def _pending(
        self,
        session: Session,
        order: OrderRow,
        item: CheckoutItem,
        sub_id: str,
        reused: str | None,
        line_id: int,
        buyer: int,
        how: str,
        card: str | None,
        now: int,
    ) -> None:
        """In the order's transaction: one pending subscription and its link to its line."""
        # FOR NO KEY UPDATE, as a single purchase does: the order's foreign key holds a
        # KEY SHARE lock on its installation already
        session.execute(
            select(InstallationRow.id)
            .where(InstallationRow.id == item.installation_id)
            .with_for_update(key_share=True)
        )
        existing = rows.subscription_for_service(
            session, item.installation_id, item.product.feature, lock=True
        )
        if (existing is not None and existing.status is not Status.EXPIRED) or (
            (None if existing is None else existing.id) != reused
        ):
            raise SubscriptionExists(
                N_("installation %(installation)s got %(feature)s at the same moment"),
                installation=item.installation_id,
                feature=item.product.feature,
            )
        before = None if existing is None else rows.load(existing)
        t = purchase(
            sub_id=sub_id,
            installation_id=item.installation_id,
            product=item.product,
            purchaser=buyer,
            term_months=item.term_months,
            now=now,
            paid=False,
        )
        rows.save(session, t.state, now=now, row=existing, pay=(how, card))
        audit.record(
            session,
            actor=f"user:{buyer}",
            action="subscription.purchase",
            object_type="subscription",
            object_id=sub_id,
            before=_snapshot(before),
            after=_snapshot(t.state),
            now=now,
        )
        rows.add_order_link(
            session,
            order_id=order.id,
            line_id=line_id,
            subscription_id=sub_id,
            kind="purchase",
            ends_at=t.state.end,
            attempt=0,
            months=item.term_months,
            now=now,
        )

    def _declined(
        self,
        order_id: int,
        sub_ids: list[str],
        reuse: list[str | None],
        actor: Principal,
        now: int,
    ) -> None:
        """A declined checkout: cancel its order; the pending subscriptions end with it."""
        service = self._service
        with service.store.transaction() as tx:
            try:
                service.billing.cancel_unpaid(tx, order_id, actor=actor, now=now)
            except OrderStateConflict:  # being paid by someone at this moment
                return
            for link in rows.order_links(tx, order_id, lock=True):
                tx.delete(link)
            for sub_id, reused in zip(sub_ids, reuse, strict=True):
                row = rows.subscription_of(tx, sub_id, lock=True)
                if row is None:
                    continue
                pending = rows.load(row)
                if reused is None:  # new: gone again
                    tx.delete(row)
                    after = None
                else:  # an expired one bought again: ended, as a cancelled checkout ends it
                    ended = replace(pending, status=Status.EXPIRED)
                    rows.save(tx, ended, now=now, row=row)
                    after = ended
                audit.record(
                    tx,
                    actor=actor.actor,
                    action="subscription.purchase_declined",
                    object_type="subscription",
                    object_id=sub_id,
                    before=_snapshot(pending),
                    after=_snapshot(after),
                    now=now,
                )
