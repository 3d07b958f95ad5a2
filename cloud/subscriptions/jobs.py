"""The renewal job: notices, charges, retries and expiry, each on its day.

One pass works in batches (:func:`cloud.subscriptions.sweep.sweep_batch`):
lock the subscriptions with work due (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL: a row another worker holds is skipped, not waited for), apply
:class:`~cloud.subscriptions.rules.lifecycle.Tick` to each (the pure rule
decides) and write the batch's states, audit entries, grants, e-mails and
devices to re-sign with one statement per effect, and commit — the affected
devices are queued for a new token, signed off the sweep's path by the re-sign
job, and the charge is marked as sent in that same commit, so another
worker does not send it again until the lease of
:data:`~cloud.subscriptions.rules.lifecycle.CHARGE_LEASE_S` runs out. Then each
charge is placed as an order with the idempotency key the rule made
(``renewal:{sub}:{end}:{attempt}:{serial}``, the serial counting every renewal
charge the subscription ever sent: one order, one charge, however many
workers), with its link written in the order's transaction, before the
charge. A success is delivered (or refunded) through the on-paid callbacks
(:mod:`cloud.subscriptions.settlement`, once per order); a decline is applied
under the row lock, and a duplicate decline changes nothing. A charge whose
answer was lost (``Time out``) is left to the lease and to billing's
reconcile job, whose success is delivered through the same callbacks — or
refunded, if the subscription can no longer take it.

Each pass also cancels purchase checkouts left unpaid for
:data:`~cloud.subscriptions.rules.lifecycle.ABANDON_AFTER_S` (which ends their
not-yet-activated subscriptions) and sends again every refund that is due
and not yet confirmed by billing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.orm.exc import StaleDataError

from cloud.billing.errors import OrderStateConflict
from cloud.billing.rules import OrderStatus
from cloud.subscriptions import queries as rows
from cloud.subscriptions.charging import RenewalCharger
from cloud.subscriptions.rules.lifecycle import ABANDON_AFTER_S
from cloud.subscriptions.rules.renewals import Due
from cloud.subscriptions.service import SubscriptionService
from cloud.subscriptions.sweep import sweep_batch
from common.clock import Clock

__all__ = ["RenewalJob", "RenewalReport"]

_log = logging.getLogger(__name__)
ACTOR = "system:renewals"
_BATCH = 1000
_MAX_BATCHES = 200  # per pass; the next pass takes the rest


@dataclass(frozen=True, slots=True)
class RenewalReport:
    """What one pass did (counts)."""

    ticked: int
    charged: int
    paid: int
    declined: int
    abandoned: int = 0  # unpaid purchase checkouts cancelled
    refunded: int = 0  # undeliverable payments given back
    resumed: int = 0  # orders found placed (another worker's, or an earlier pass's)


class RenewalJob:
    """Runs the subscription lifecycle's time-driven rules; safe in every worker."""

    def __init__(
        self,
        service: SubscriptionService,
        *,
        clock: Clock,
        interval_s: float = 60.0,
        batch: int = _BATCH,
        max_batches: int = _MAX_BATCHES,
        sweepers: int | None = None,
    ) -> None:
        self.name = "subscription-renewals"
        self.interval_s = interval_s
        self._service = service
        self._charger = RenewalCharger(service)
        self._clock = clock
        self._batch = batch
        self._max_batches = max_batches
        if sweepers is None:  # PostgreSQL: two, so one's statements run while one decides
            sweepers = 2 if service.store.engine.dialect.name == "postgresql" else 1
        if sweepers < 1:
            raise ValueError("sweepers must be at least 1")
        self._sweepers = sweepers

    async def run_once(self) -> RenewalReport:
        """Every subscription due at the clock's ``now``, in batches; idempotent.

        The charges of every batch are placed after the last one, from the database
        (:meth:`~cloud.subscriptions.charging.RenewalCharger.place_ticked`): one
        purchaser's charges for one month are one order, even when batches or workers
        split them.
        """
        now = self._clock()
        charged = paid = declined = resumed = 0
        ticked, pending = await self._sweep(now)
        for placed in await self._charger.place_ticked(pending, now=now):
            if placed.resumed:  # its answer applied again: charged where it was placed
                resumed += 1
                continue
            charged += 1
            paid += placed.status is OrderStatus.SUCCEED
            declined += placed.status in (OrderStatus.FAILED, OrderStatus.PROCESSING)
        abandoned = await self._cancel_abandoned(now=now)
        refunded = await self._service.settlement.refund_due()
        if ticked or charged or resumed or abandoned or refunded:
            _log.info(
                "renewals: %d ticked, %d charged (%d paid, %d declined), %d resumed, "
                "%d checkouts abandoned, %d refunded",
                ticked,
                charged,
                paid,
                declined,
                resumed,
                abandoned,
                refunded,
            )
        return RenewalReport(ticked, charged, paid, declined, abandoned, refunded, resumed)

    async def _sweep(self, now: int) -> tuple[int, list[Due]]:
        """Tick every due subscription, in batches (at most ``max_batches``): (rows
        changed, charges to place).

        On PostgreSQL ``sweepers`` threads sweep at once, each its own transactions:
        ``SKIP LOCKED`` gives them disjoint batches, and the database works on one's
        statements while the other's rule decides in Python (the sweep was half
        server time, half client). SQLite takes one writer at a time: one sweeper.
        A sweeper stops at a short batch (nothing more due, or the rest held by
        another), or at a batch that changed under it (the next pass sees it).
        """
        budget = self._max_batches
        ticked = 0
        pending: list[Due] = []

        async def sweeper() -> None:
            nonlocal budget, ticked
            while budget > 0:
                budget -= 1
                selected, changed, charges = await asyncio.to_thread(self._tick_due, now)
                ticked += changed
                pending.extend(charges)
                if selected < self._batch:
                    return

        try:
            async with asyncio.TaskGroup() as sweeping:
                for _ in range(self._sweepers):
                    sweeping.create_task(sweeper())
        except ExceptionGroup as failed:  # raised as one sweeper would (the runner logs it)
            raise failed.exceptions[0] from None
        return ticked, pending

    async def _cancel_abandoned(self, *, now: int) -> int:
        """Cancel purchase checkouts unpaid for ABANDON_AFTER_S; their subscriptions end."""

        def due() -> list[int]:
            with self._service.store.transaction() as tx:
                return rows.abandoned_checkouts(tx, placed_before=now - ABANDON_AFTER_S)

        cancelled = 0
        for order_id in await asyncio.to_thread(due):
            try:
                await self._service.billing.cancel(order_id, actor=ACTOR, now=now)
            except OrderStateConflict:  # paid, being paid, or its answer is being reconciled
                continue
            cancelled += 1
        return cancelled

    def _tick_due(self, now: int) -> tuple[int, int, tuple[Due, ...]]:
        """(rows selected, rows changed, charges to place): one batch, one transaction."""
        try:
            with self._service.store.transaction() as tx:
                done = sweep_batch(tx, now=now, limit=self._batch, actor=ACTOR)
        except StaleDataError:  # another worker wrote a row between read and write
            _log.info("renewals: a subscription changed under this pass; the next pass sees it")
            return 0, 0, ()
        return done.selected, done.ticked, done.charges
