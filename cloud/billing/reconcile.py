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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloud.billing import repository as repo
from cloud.billing.payments import Charge
from cloud.billing.rules import STALE_CHARGE_S, OrderStatus

if TYPE_CHECKING:
    from cloud.billing.orders import Billing

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


async def reconcile(billing: Billing, *, now: int) -> ReconcileReport:
    """One pass at ``now`` (idempotent, safe beside other workers)."""

    def claim() -> list[tuple[int, str]]:
        with billing.store.transaction() as tx:
            return repo.claim_unknown_charges(
                tx, stale_before=now - STALE_CHARGE_S, actor=_ACTOR, now=now
            )

    resolved: list[tuple[int, OrderStatus]] = []
    unknown: list[int] = []
    for txn_id, key in await asyncio.to_thread(claim):
        try:
            charge = await billing.provider.lookup(key)
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
        row = await asyncio.to_thread(billing.record_charge, txn_id, charge, _ACTOR, now)
        resolved.append((row.id, OrderStatus(row.status)))

    def pending() -> list[int]:
        with billing.store.transaction() as tx:
            return repo.unhandled_paid_orders(tx)

    ran = []
    for order_id in await asyncio.to_thread(pending):
        if await billing.run_callbacks(order_id, now=now):
            ran.append(order_id)
    return ReconcileReport(tuple(resolved), tuple(unknown), tuple(ran))
