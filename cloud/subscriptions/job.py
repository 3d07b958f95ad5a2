"""The renewal job: notices, charges, retries and expiry, each on its day.

One pass: lock the subscriptions with work due (``FOR UPDATE SKIP LOCKED``
on PostgreSQL: a row another worker holds is skipped, not waited for), apply
:class:`~cloud.domain.lifecycle.Tick` and commit — the charge is marked as
sent in that same commit, so another worker does not send it again until the
lease of :data:`~cloud.domain.lifecycle.CHARGE_LEASE_S` runs out. Then each
charge is placed as an order with the idempotency key the rule made
(``renewal:{sub}:{end}:{attempt}``: one order, one charge, however many
workers), and its answer is applied under the row lock; a duplicate answer
changes nothing. A charge whose answer was lost (``Time out``) is left to
the lease and to billing's reconcile job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.orm.exc import StaleDataError

from cloud.billing.lifecycle import OrderLine, OrderStatus
from cloud.domain.lifecycle import Charge, ChargeFailed, ChargeSucceeded, Event, Tick, apply
from cloud.ports import Clock
from cloud.store import Tx
from cloud.store import subscriptions as rows
from cloud.store.subscriptions import SubscriptionRow
from cloud.subscriptions.service import SubscriptionService

__all__ = ["RenewalJob", "RenewalReport"]

_log = logging.getLogger(__name__)
ACTOR = "system:renewals"
_BATCH = 100
_MAX_BATCHES = 50  # per pass; the next pass takes the rest


@dataclass(frozen=True, slots=True)
class RenewalReport:
    """What one pass did (counts)."""

    ticked: int
    charged: int
    paid: int
    declined: int


@dataclass(frozen=True, slots=True)
class _Pending:
    sub_id: str
    installation_id: str
    product_code: str
    description: str
    pay_with: str
    card_token: str | None
    charge: Charge


class RenewalJob:
    """Runs the subscription lifecycle's time-driven rules; safe in every worker."""

    def __init__(
        self, service: SubscriptionService, *, clock: Clock, interval_s: float = 60.0
    ) -> None:
        self.name = "subscription-renewals"
        self.interval_s = interval_s
        self._service = service
        self._clock = clock

    async def run_once(self) -> RenewalReport:
        """Every subscription due at the clock's ``now``, in batches; idempotent."""
        now = self._clock()
        ticked = charged = paid = declined = 0
        for _ in range(_MAX_BATCHES):
            selected, changed, pending, devices = await asyncio.to_thread(self._tick_due, now)
            ticked += changed
            await self._service.reissue(devices)
            for item in pending:
                try:
                    event, order_id = await self._charge(item, now=now)
                except Exception:  # the lease sends it again (same key) on a later pass
                    _log.exception("renewal charge %s failed", item.charge.idempotency_key)
                    continue
                charged += 1
                if event is None:
                    continue
                paid += isinstance(event, ChargeSucceeded)
                declined += isinstance(event, ChargeFailed)
                await self._answer(item, event, order_id=order_id, now=now)
            if selected < _BATCH:
                break
        if ticked or charged:
            _log.info(
                "renewals: %d ticked, %d charged (%d paid, %d declined)",
                ticked,
                charged,
                paid,
                declined,
            )
        return RenewalReport(ticked=ticked, charged=charged, paid=paid, declined=declined)

    def _tick_due(self, now: int) -> tuple[int, int, list[_Pending], list[str]]:
        """(rows selected, rows changed, charges to place, devices to re-issue for)."""
        pending: list[_Pending] = []
        devices: list[str] = []
        ticked = 0
        try:
            with self._service.store.transaction() as tx:
                due = rows.due_subscriptions(tx.session, now=now, limit=_BATCH)
                for row in due:
                    before = rows.load(row)
                    t = apply(before, Tick(), now=now)
                    if t.state == before:
                        continue
                    ticked += 1
                    row, changed = self._service.commit(
                        tx, row, before, t, actor=ACTOR, action="subscription.tick", now=now
                    )
                    devices += changed
                    pending += [
                        _Pending(
                            sub_id=row.id,
                            installation_id=row.installation_id,
                            product_code=row.product_code,
                            description=f"{before.product.name}, renewal",
                            pay_with=row.pay_with,
                            card_token=row.card_token,
                            charge=e,
                        )
                        for e in t.effects
                        if isinstance(e, Charge)
                    ]
        except StaleDataError:  # another worker wrote the row between read and write
            _log.info("renewals: a subscription changed under this pass; the next pass sees it")
            return 0, 0, [], []
        return len(due), ticked, pending, devices

    async def _charge(self, item: _Pending, *, now: int) -> tuple[Event | None, int]:
        charge = item.charge
        order = await self._service.billing.place_order(
            kind="renewal",
            buyer=charge.buyer,
            installation_id=item.installation_id,
            lines=[
                OrderLine(item.product_code, item.description, charge.months, charge.amount_cents)
            ],
            pay_with=item.pay_with,
            card_token=item.card_token if item.pay_with == "card" else None,
            idempotency_key=charge.idempotency_key,
            now=now,
        )
        event: Event | None = None
        if order.status is OrderStatus.SUCCEED:
            event = ChargeSucceeded(end=charge.end, attempt=charge.attempt)
        elif order.status is OrderStatus.FAILED:
            event = ChargeFailed(end=charge.end, attempt=charge.attempt)
        elif order.status is OrderStatus.PROCESSING:  # no card on file: it waits for checkout
            event = ChargeFailed(
                end=charge.end, attempt=charge.attempt, reason="not paid (no card on file)"
            )
        # else time out / system processing: the lease and billing's reconcile settle it
        return event, order.order_id

    async def _answer(self, item: _Pending, event: Event, *, order_id: int, now: int) -> None:
        charge = item.charge

        def link(tx: Tx, row: SubscriptionRow) -> None:
            rows.add_order_link(
                tx.session,
                order_id=order_id,
                subscription_id=item.sub_id,
                kind="renewal",
                ends_at=charge.end,
                attempt=charge.attempt,
                months=charge.months,
                now=now,
            )

        action = (
            "subscription.charge_paid"
            if isinstance(event, ChargeSucceeded)
            else "subscription.charge_failed"
        )
        _, devices, _ = await asyncio.to_thread(
            self._service.apply_event,
            item.sub_id,
            event,
            actor=ACTOR,
            action=action,
            now=now,
            link=link,
        )
        await self._service.reissue(devices)
