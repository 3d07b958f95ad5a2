"""A repair's money, only through billing: accepting and paying a quote, billing's
callbacks (paid, given back), and cancelling a repair (a paid one is given back first).

Accepting a quote places a card order (or an invoiced one for a partner that pays by
invoice) whose on-paid callback moves the repair to ``paid``; cancelling a paid repair
withdraws the order (void or refund) *before* the repair is cancelled, so a failed refund
cancels nothing; an order given back elsewhere (the orders API) cancels its paid repair.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import Permission, allowed
from cloud.billing import queries as billing_repo
from cloud.billing.errors import PaymentProviderError
from cloud.billing.orders import Billing
from cloud.billing.rules import OrderKind, OrderLine, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.database import Store
from cloud.devices.access import ensure_installation_access
from cloud.errors import N_, Forbidden, InvalidRequest, PaymentDeclined, UpstreamFailed
from cloud.repairs.access import is_staff, load_repair
from cloud.repairs.journal import Journal
from cloud.repairs.notices import repair_number
from cloud.repairs.rules import Path, Status, Step, next_step, refund_on_cancel
from cloud.repairs.tables import RepairRow
from cloud.repairs.views import RepairView, repair_view, snapshot
from cloud.subscriptions.payer import payment_method
from common.clock import Clock

__all__ = ["REPAIR_PRODUCT", "RepairPayments"]

_log = logging.getLogger(__name__)
_ACTOR = "system:repairs"
REPAIR_PRODUCT = "REPAIR"


class RepairPayments:
    def __init__(self, store: Store, billing: Billing, journal: Journal, *, clock: Clock) -> None:
        self._store = store
        self._billing = billing
        self._journal = journal
        self._clock = clock
        self._withdrawing: set[int] = set()  # orders :meth:`cancel` is giving back now
        billing.on_paid(self.on_paid)
        billing.on_reversed(self.on_reversed)

    def _view(self, session: Session, row: RepairRow, principal: Principal) -> RepairView:
        return repair_view(session, row, principal, currency=self._billing.currency)

    async def accept(
        self, principal: Principal, repair_id: int, *, card_token: str | None
    ) -> RepairView:
        """The customer accepts the quote and pays it through billing: a card order charged
        now (again after a declined card), or an invoiced order for a partner that pays by
        invoice. The repair becomes ``paid`` when billing says the order is paid.

        Raises:
            UnknownRepair, Forbidden (staff never pay), InvalidTransition (not quoted).
            InvalidRequest: a card payment without a card token; no user to pay.
            PaymentDeclined: the card was declined (the repair stays quoted; pay again).
            UpstreamFailed: the payment provider failed.
        """
        now = self._clock()

        def prepare_order() -> tuple[RepairRow, str]:
            with self._store.transaction() as tx:
                row = load_repair(tx, principal, repair_id, lock=True)
                # a blacklisted customer is refused whatever the repair's state
                ensure_installation_access(tx, principal, row.installation_id, write=True)
                next_step(Path(row.path), Status(row.status), Step.PAY, staff=is_staff(principal))
                if principal.user_id is None:
                    raise InvalidRequest(
                        N_("a quote is accepted by a user: sign in or use their key")
                    )
                how = payment_method(tx, principal.user_id, None)
                if how == "card" and card_token is None:
                    raise InvalidRequest(N_("pay the quote with a card: give card_token"))
                return row, how

        row, how = await asyncio.to_thread(prepare_order)
        assert row.quote_cents is not None and principal.user_id is not None

        def link(session: Session, order: OrderRow) -> None:
            found = session.get(RepairRow, repair_id, with_for_update=True)
            assert found is not None
            found.order_id = order.id

        try:
            if row.order_id is None:
                result = await self._billing.place_order(
                    kind=OrderKind.REPAIR,
                    buyer=principal.user_id,
                    installation_id=row.installation_id,
                    lines=[
                        OrderLine(
                            product_code=REPAIR_PRODUCT,
                            description=f"Repair {repair_number(row.id)} of {row.device_id}",
                            months=0,
                            amount_cents=row.quote_cents,
                        )
                    ],
                    pay_with=how,
                    card_token=card_token if how == "card" else None,
                    idempotency_key=f"repair:{row.id}:quote",
                    now=now,
                    prepare=link,
                )
                order_id, status = result.order_id, result.status
                if status is OrderStatus.SUCCEED:
                    await self._billing.run_callbacks(order_id, now=now)
            else:
                assert card_token is not None
                paid = await self._billing.pay(
                    row.order_id, card_token=card_token, actor=principal, now=now
                )
                order_id, status = paid.order_id, paid.status
        except PaymentProviderError as exc:
            raise UpstreamFailed(f"payment provider: {exc}") from exc
        if status is OrderStatus.FAILED:
            raise PaymentDeclined(
                N_("the card was declined: the repair is not paid; pay again with another card")
            )
        _log.info("repair %d: order %d is %s", repair_id, order_id, status.value)
        with self._store.transaction() as tx:
            return self._view(tx, load_repair(tx, principal, repair_id), principal)

    async def _follow_order(
        self, order_id: int, *, when: Status, step: Step, staff: bool, **record: Any
    ) -> None:
        """Take ``step`` on the repair whose order is ``order_id`` if it is ``when`` (billing's
        callbacks: idempotent, another order or status is left alone); ``record``: the
        journal's note and facts."""
        now = self._clock()

        def work() -> None:
            with self._store.transaction() as tx:
                row = tx.scalars(
                    select(RepairRow).where(RepairRow.order_id == order_id).with_for_update()
                ).one_or_none()
                if row is None or Status(row.status) is not when:
                    return
                before = snapshot(row)
                row.status = next_step(Path(row.path), when, step, staff=staff)
                self._journal.record(
                    tx, row, _ACTOR, step=step.value, before=before, now=now, **record
                )

        await asyncio.to_thread(work)

    async def on_paid(self, order_id: int) -> None:
        """Billing's on-paid callback: a repair's quote is paid (idempotent; others ignored)."""
        await self._follow_order(order_id, when=Status.QUOTED, step=Step.PAY, staff=False)

    async def on_reversed(self, order_id: int) -> None:
        """Billing's on-reversed callback: a paid repair whose order was voided or refunded
        in full elsewhere (the orders API) is cancelled, so no unpaid repair goes on
        (idempotent; an order :meth:`cancel` gives back itself is left to it)."""
        if order_id in self._withdrawing:
            return
        await self._follow_order(
            order_id,
            when=Status.PAID,
            step=Step.CANCEL,
            staff=True,
            note="the payment was given back",
            facts={"refunded": True},
        )

    async def cancel(self, principal: Principal, repair_id: int, *, reason: str) -> RepairView:
        """Cancel the repair where the rules allow; a paid one is given back through billing
        first (void or refund; needs the ``refunds`` permission), an unpaid order is
        cancelled with it.

        Raises:
            UnknownRepair, Forbidden, InvalidTransition.
            UpstreamFailed: the provider failed to give the money back (nothing cancelled).
        """
        now = self._clock()

        def check() -> RepairRow:
            with self._store.transaction() as tx:
                row = load_repair(tx, principal, repair_id)
                next_step(
                    Path(row.path), Status(row.status), Step.CANCEL, staff=is_staff(principal)
                )
                if refund_on_cancel(Status(row.status)) and not allowed(
                    principal.role, Permission.REFUNDS
                ):
                    raise Forbidden(
                        N_(
                            "the repair is paid: an administrator cancels it "
                            "and refunds the payment"
                        )
                    )
                return row

        row = await asyncio.to_thread(check)
        refunded = False
        if refund_on_cancel(Status(row.status)) and row.order_id is not None:
            try:
                self._withdrawing.add(row.order_id)
                await self._billing.withdraw(row.order_id, actor=principal, now=now)
            except PaymentProviderError as exc:
                raise UpstreamFailed(f"payment provider: {exc}") from exc
            finally:
                self._withdrawing.discard(row.order_id)
            refunded = True

        def work() -> RepairView:
            with self._store.transaction() as tx:
                row = load_repair(tx, principal, repair_id, lock=True)
                before = snapshot(row)
                status = Status(row.status)
                row.status = next_step(
                    Path(row.path), status, Step.CANCEL, staff=is_staff(principal)
                )
                if status is Status.QUOTED and row.order_id is not None:
                    order = billing_repo.get_order(tx, row.order_id)
                    if order is not None and OrderStatus(order.status) in (
                        OrderStatus.PROCESSING,
                        OrderStatus.FAILED,
                    ):
                        Billing.cancel_unpaid(tx, row.order_id, actor=principal, now=now)
                self._journal.record(
                    tx,
                    row,
                    principal,
                    step="cancel",
                    before=before,
                    now=now,
                    note=reason,
                    facts={"refunded": refunded},
                )
                tx.flush()
                return self._view(tx, row, principal)

        return await asyncio.to_thread(work)
