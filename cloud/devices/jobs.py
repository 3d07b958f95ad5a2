"""Token jobs: the refresh (near expiry, old epoch; the outbox) and the re-sign queue's drain.

The refresh decision is :func:`cloud.devices.rules.plan_refresh` (pure);
:class:`RefreshJob` loads the candidates with one query, re-issues in batches
(one statement per batch per effect) through the
:class:`~cloud.devices.issuing.IssuingService` and publishes what the outbox
still holds (a failed publish, a crash between commit and publish). Safe to
run in every worker: re-issues are re-checked under the device's row lock.

:class:`ResignJob` drains the re-sign queue other jobs fill (the renewal
sweep queues the devices of the installations it changed), in batches,
``SKIP LOCKED`` across workers; a device whose token would not change what it
does before it expires is skipped (:func:`cloud.devices.rules.resign_reason`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.issuing import Issued, IssuingService, ResignPass
from cloud.devices.rules import TokenState, plan_refresh
from cloud.jobs import run_passes
from common.clock import Clock

__all__ = ["RefreshJob", "RefreshReport", "ResignJob", "ResignReport"]

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
        plan = plan_refresh(states, now=now, refresh_before_s=self._refresh_before_s, epoch=epoch)
        reissued = await self._service.reissue(plan.reissue, if_due_within_s=self._refresh_before_s)
        # unconfirmed tokens are republished from the outbox, once past the grace
        republished = await self._service.publish_outbox(before=now - self._republish_after_s)
        if reissued or republished:
            _log.info(
                "refresh: %d token(s) re-issued, %d re-published", len(reissued), len(republished)
            )
        return RefreshReport(reissued=tuple(reissued), republished=tuple(republished))

    async def run(self) -> None:
        """Run passes every ``interval_s`` until cancelled; a failed pass is logged."""
        await run_passes(self)


@dataclass(frozen=True, slots=True)
class ResignReport:
    """What one drain pass did."""

    claimed: int
    signed: int
    skipped: int
    published: int


class ResignJob:
    """Drains the token re-sign queue in batches; safe in every worker (``SKIP LOCKED``)."""

    def __init__(
        self,
        service: IssuingService,
        *,
        refresh_before_s: int,
        interval_s: float = 1.0,
        batch: int = 500,
        max_batches: int = 1000,
    ) -> None:
        if interval_s <= 0 or batch <= 0:
            raise ValueError("the re-sign interval and batch must be positive")
        self.name = "token-resign"
        self.interval_s = interval_s
        self._service = service
        self._refresh_before_s = refresh_before_s
        self._batch = batch
        self._max_batches = max_batches

    async def run_once(self) -> ResignReport:
        """Drain until the queue is empty (or ``max_batches``: the next pass takes the rest)."""
        claimed = signed = skipped = published = 0
        for _ in range(self._max_batches):
            done: ResignPass = await self._service.drain_resign(
                limit=self._batch, refresh_before_s=self._refresh_before_s
            )
            claimed += done.claimed
            signed += len(done.issued)
            skipped += done.skipped
            published += sum(i.published for i in done.issued)
            if done.claimed < self._batch:
                break
        if claimed:
            _log.info(
                "re-sign: %d queued device(s), %d signed, %d skipped, %d published",
                claimed,
                signed,
                skipped,
                published,
            )
        return ResignReport(claimed, signed, skipped, published)

    async def run(self) -> None:
        await run_passes(self)
