"""Reconciliation: what became of charges whose answer was lost, and on-paid callbacks to redo.

A charge in ``Time out`` (or still ``Processing`` / ``System Processing``
:data:`~cloud.billing.rules.STALE_CHARGE_S` after its last change: a
worker died mid-charge or mid-reconcile) is claimed as ``System
Processing`` in one transaction (row locks, ``SKIP LOCKED``), then looked up
at the provider by its idempotency key, which never charges:

* charged → ``Succeed`` (and the on-paid callbacks run);
* declined, or the provider never received it → ``Failed`` (nothing was
  charged; the customer may pay again);
* no answer → stays ``System Processing``, looked up again once stale.

An order that succeeded but whose callbacks did not all run (``paid_handled_at``
unset) gets them re-run here; they must be idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloud.billing import queries as repo
from cloud.billing.payments import Charge, PaymentProvider
from cloud.billing.rules import STALE_CHARGE_S, OrderStatus
from cloud.billing.tables import OrderRow
from cloud.database import Store

__all__ = ["ReconcileReport", "reconcile"]

_log = logging.getLogger(__name__)

_ACTOR = "system:payment-reconcile"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """One reconciliation pass: (order, new status) resolved, transactions still unknown,
    orders whose callbacks ran."""

    resolved: tuple[tuple[int, OrderStatus], ...]
    still_unknown: tuple[int, ...]
    callbacks_run: tuple[int, ...]


async def reconcile(
    store: Store,
    provider: PaymentProvider,
    *,
    record_charge: Callable[[int, Charge, str, int], OrderRow],
    run_callbacks: Callable[[int], Awaitable[bool]],
    now: int,
) -> ReconcileReport:
    """One pass at ``now`` (idempotent, safe beside other workers).

    The billing service owns the pass and hands in what it needs:
    ``record_charge(txn_id, charge, actor, now)`` records a looked-up
    outcome, ``run_callbacks(order_id)`` re-runs an order's on-paid callbacks.
    """

    def claim() -> list[tuple[int, str]]:
        with store.transaction() as tx:
            return repo.claim_unknown_charges(
                tx, stale_before=now - STALE_CHARGE_S, actor=_ACTOR, now=now
            )

    resolved: list[tuple[int, OrderStatus]] = []
    unknown: list[int] = []
    for txn_id, key in await asyncio.to_thread(claim):
        try:
            charge = await provider.lookup(key)
        except Exception as exc:  # the provider is down: ask again next time
            _log.warning("lookup of charge %s failed: %s", key, type(exc).__name__)
            unknown.append(txn_id)
            continue
        if charge is None:
            charge = Charge(
                charge_id="",
                status="declined",
                settled=False,
                decline_reason="the provider never received the charge",
            )
        if charge.status == "timed_out":
            unknown.append(txn_id)
            continue
        row = await asyncio.to_thread(record_charge, txn_id, charge, _ACTOR, now)
        resolved.append((row.id, OrderStatus(row.status)))

    def pending() -> list[int]:
        with store.transaction() as tx:
            return repo.unhandled_paid_orders(tx)

    ran = []
    for order_id in await asyncio.to_thread(pending):
        if await run_callbacks(order_id):
            ran.append(order_id)
    return ReconcileReport(tuple(resolved), tuple(unknown), tuple(ran))
