"""Background jobs: one runner, many idempotent jobs; the token refresh job.

:class:`JobRunner` runs each :class:`Job` every ``interval_s`` as a named
task; every job must be idempotent and safe when several cloud workers run
it against one database at the same moment (row locks, conditional
updates). Tests call ``run_once`` directly with a test clock.

The decision is :func:`cloud.domain.plan_refresh` (pure); :class:`RefreshJob`
only loads the candidates, applies the plan through the
:class:`~cloud.issuing.IssuingService` and sleeps. Safe to run in every
worker: re-issues are re-checked under the device's row lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cloud.domain import TokenState, plan_refresh
from cloud.issuing import Issued, IssuingService
from cloud.ports import Clock
from cloud.store import Store

__all__ = ["Job", "JobRunner", "RefreshJob", "RefreshReport", "plan_refresh"]

_log = logging.getLogger(__name__)


class Job(Protocol):
    """One kind of background work, done in passes."""

    name: str
    interval_s: float

    async def run_once(self) -> object:
        """One pass at the job's clock's ``now``; idempotent, safe beside other workers."""
        ...


class JobRunner:
    """Runs every job in passes until cancelled; a failed pass is logged and retried."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        # set once every job has finished (or failed) its first pass, the one at start-up
        self.first_passes_done = asyncio.Event()

    async def run_once(self) -> dict[str, object]:
        """One pass of every job, in order (tests and the test clock use this)."""
        return {job.name: await job.run_once() for job in self.jobs}

    async def run(self) -> None:
        remaining = len(self.jobs)

        def first_pass_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self.first_passes_done.set()

        if not self.jobs:
            self.first_passes_done.set()
        async with asyncio.TaskGroup() as tasks:
            for job in self.jobs:
                tasks.create_task(_loop(job, first_pass_done), name=f"job-{job.name}")


async def _loop(job: Job, after_first_pass: Callable[[], None] | None = None) -> None:
    while True:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # a cancellation swallowed by asyncio.wait_for (Python 3.11) during a publish
            raise asyncio.CancelledError
        try:
            await job.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("%s pass failed; retrying in %.0fs", job.name, job.interval_s)
        if after_first_pass is not None:
            after_first_pass()
            after_first_pass = None
        await asyncio.sleep(job.interval_s)


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
                return tx.refresh_candidates(
                    now=now, refresh_before_s=self._refresh_before_s, epoch=epoch
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
        await _loop(self)
