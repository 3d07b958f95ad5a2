"""Background jobs: one runner, many idempotent jobs (each feature keeps its own in ``jobs``).

:class:`JobRunner` runs each :class:`Job` every ``interval_s`` as a named
task; every job must be idempotent and safe when several cloud workers run
it against one database at the same moment (row locks, conditional
updates). Tests call ``run_once`` directly with a test clock.

"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Job", "JobRunner", "run_passes"]

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
        # passes run here, by (job name, "ok" | "failed"): this worker's /metrics
        self.passes: Counter[tuple[str, str]] = Counter()

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
                tasks.create_task(
                    run_passes(job, first_pass_done, passes=self.passes), name=f"job-{job.name}"
                )


async def run_passes(
    job: Job,
    after_first_pass: Callable[[], None] | None = None,
    *,
    passes: Counter[tuple[str, str]] | None = None,
) -> None:
    """Run ``job`` every ``interval_s`` until cancelled; a failed pass is logged and retried."""
    while True:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # a cancellation swallowed by asyncio.wait_for (Python 3.11) during a publish
            raise asyncio.CancelledError
        outcome = "ok"
        try:
            await job.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            outcome = "failed"
            _log.exception("%s pass failed; retrying in %.0fs", job.name, job.interval_s)
        if passes is not None:
            passes[(job.name, outcome)] += 1
        if after_first_pass is not None:
            after_first_pass()
            after_first_pass = None
        await asyncio.sleep(job.interval_s)
