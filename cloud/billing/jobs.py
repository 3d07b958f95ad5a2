"""Background jobs of billing: retry failed refunds daily; reconcile lost charge answers.

Both follow :class:`cloud.jobs.Job`: one pass at the clock's ``now``,
idempotent, safe with several workers on one PostgreSQL database (rows are
claimed with ``FOR UPDATE SKIP LOCKED`` and a lease or a status change in
the claiming transaction).
"""

from __future__ import annotations

from cloud.billing.orders import Billing
from cloud.billing.reconcile import ReconcileReport
from cloud.billing.refunds import RetryReport
from common.clock import Clock

__all__ = ["PaymentReconcileJob", "RefundRetryJob"]


class RefundRetryJob:
    """Retries refunds the provider failed, once a day each, three times; then emails."""

    def __init__(self, billing: Billing, *, clock: Clock, interval_s: float = 3600.0) -> None:
        if interval_s <= 0:
            raise ValueError("refund retry interval must be positive")
        self.name = "refund-retry"
        self.interval_s = interval_s
        self._billing = billing
        self._clock = clock

    async def run_once(self) -> RetryReport:
        return await self._billing.refunds.retry_due(now=self._clock())


class PaymentReconcileJob:
    """Asks the provider what became of charges that timed out; re-runs on-paid callbacks."""

    def __init__(self, billing: Billing, *, clock: Clock, interval_s: float = 300.0) -> None:
        if interval_s <= 0:
            raise ValueError("reconcile interval must be positive")
        self.name = "payment-reconcile"
        self.interval_s = interval_s
        self._billing = billing
        self._clock = clock

    async def run_once(self) -> ReconcileReport:
        return await self._billing.reconcile(now=self._clock())
