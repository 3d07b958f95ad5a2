"""The refresh job: re-issue tokens near expiry or with ended features; re-publish unconfirmed ones.

The decision is :func:`cloud.devices.rules.plan_refresh` (pure); :class:`RefreshJob`
only loads the candidates, applies the plan through the
:class:`~cloud.devices.issuing.IssuingService` and sleeps. Safe to run in every
worker: re-issues are re-checked under the device's row lock.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.issuing import Issued, IssuingService
from cloud.devices.rules import TokenState, plan_refresh
from cloud.jobs import run_passes
from common.clock import Clock

__all__ = ["RefreshJob", "RefreshReport"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What one pass did."""

    reissued: tuple[Issued, ...]
    republished: tuple[Issued, ...]


class RefreshJob:
    """Re-issues tokens near expiry or with ended features; re-publishes unconfirmed ones."""

    def __init__(
        self,
        service: IssuingService,
        store: Store,
        *,
        refresh_before_s: int,
        interval_s: float,
        clock: Clock,
        republish_after_s: int = 30,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("refresh interval must be positive")
        self.name = "token-refresh"
        self.interval_s = interval_s
        self._service = service
        self._store = store
        self._refresh_before_s = refresh_before_s
        self._clock = clock
        self._republish_after_s = republish_after_s

    async def run_once(self) -> RefreshReport:
        """One pass at the clock's ``now``; idempotent."""
        now = self._clock()
        epoch = self._service.signer.keyset.epoch

        def load() -> list[TokenState]:
            with self._store.transaction() as tx:
                return device_queries.refresh_candidates(
                    tx, now=now, refresh_before_s=self._refresh_before_s, epoch=epoch
                )

        states = await asyncio.to_thread(load)
        plan = plan_refresh(
            states,
            now=now,
            refresh_before_s=self._refresh_before_s,
            epoch=epoch,
            republish_after_s=self._republish_after_s,
        )
        reissued = await self._service.reissue(plan.reissue, if_due_within_s=self._refresh_before_s)
        republished = await self._service.republish(plan.republish)
        if reissued or republished:
            _log.info(
                "refresh: %d token(s) re-issued, %d re-published", len(reissued), len(republished)
            )
        return RefreshReport(reissued=tuple(reissued), republished=tuple(republished))

    async def run(self) -> None:
        """Run passes every ``interval_s`` until cancelled; a failed pass is logged."""
        await run_passes(self)
