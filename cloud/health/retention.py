"""Health retention: raw reports older than the retention are downsampled, then deleted.

Each pass folds batches of old raw rows into ``health_hourly`` (count, sum,
min, max per device, hour and metric) and deletes them in the same
transaction, so nothing is lost between the two: per batch, one claim, one
upsert of all its aggregates (executemany) and one delete. Rows are claimed
with ``FOR UPDATE SKIP LOCKED`` so two PostgreSQL workers fold disjoint rows;
on SQLite every write transaction starts ``BEGIN IMMEDIATE``, so workers take
turns and the next one no longer finds the rows folded before it. Hourly
aggregates older than their own (longer) retention are deleted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy import delete

from cloud.database import Store
from cloud.health import queries as repo
from cloud.health.tables import HealthHourlyRow, StatusEventRow
from common.clock import Clock

__all__ = ["HealthRetentionJob", "RetentionPass"]


@dataclass(frozen=True, slots=True)
class RetentionPass:
    folded: int
    hourly_deleted: int


class HealthRetentionJob:
    name = "health-retention"

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        raw_retention_s: int,
        hourly_retention_s: int,
        interval_s: float = 3600.0,
        batch: int = 5000,
        max_batches: int = 20,
    ) -> None:
        if hourly_retention_s < raw_retention_s:
            raise ValueError("hourly aggregates must be kept at least as long as raw reports")
        self._store = store
        self._clock = clock
        self._raw_s = raw_retention_s
        self._hourly_s = hourly_retention_s
        self._batch = batch
        self._max_batches = max_batches
        self.interval_s = interval_s

    async def run_once(self) -> RetentionPass:
        now = self._clock()
        cutoff = now - self._raw_s

        def fold() -> int:
            with self._store.transaction() as tx:
                return repo.downsample_before(tx, cutoff=cutoff, limit=self._batch)

        def prune() -> int:
            with self._store.transaction() as tx:
                gone = tx.execute(
                    delete(HealthHourlyRow).where(HealthHourlyRow.hour < now - self._hourly_s)
                ).rowcount  # type: ignore[attr-defined]
                tx.execute(delete(StatusEventRow).where(StatusEventRow.at < cutoff))
                return int(gone)

        folded = 0
        for _ in range(self._max_batches):
            done = await asyncio.to_thread(fold)
            folded += done
            if done < self._batch:
                break
        return RetentionPass(folded=folded, hourly_deleted=await asyncio.to_thread(prune))
