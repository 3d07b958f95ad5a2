"""The verdict kept per device: diagnosed by a job, read by the fleet overview.

Diagnosing a device costs ~0.5 ms (its history loaded, every rule run), so the
fleet is not diagnosed on each request: :class:`VerdictJob` keeps one row per
device in ``device_verdicts`` (verdict, action, first rule, firmware, the
current token's version / expiry / delivery), re-diagnosing a device when it
has been heard from since (at most every ``min_gap_s``) and at least every
``max_age_s`` (rule windows slide even when a device is silent). The device
page re-diagnoses its one device and stores the result too
(:func:`refresh_verdicts`), and a fleet request diagnoses devices that were
never diagnosed, so nothing is missing from a count.

Safe beside other workers: each pass reads the due devices once (at most
``batch * max_batches``, the longest-waiting first), then diagnoses them in
batches, one transaction each, upserting their rows; two workers doing the
same device write the same thing.
Batches are small (100) because on SQLite every transaction holds the write
lock, and a device with 7 days of 10-second history takes seconds to diagnose
(the long-window rules read every sample): bench/bench_pages.py prints it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.health import queries as repo
from cloud.health.rules.diagnostics import Diagnosis, diagnose
from common.clock import Clock

__all__ = ["VerdictJob", "VerdictPass", "refresh_verdicts"]

_FW_MAX = 64


def refresh_verdicts(
    session: Session, device_ids: Sequence[str], *, now: int
) -> dict[str, Diagnosis]:
    """Diagnose these devices at ``now`` and store their verdict rows; the diagnoses."""
    ids = sorted(set(device_ids))
    if not ids:
        return {}
    histories = repo.diagnosis_histories(session, ids, now=now)
    states = repo.state_of(session, ids)
    tokens = device_queries.current_tokens(session, ids)
    found: dict[str, Diagnosis] = {}
    rows: list[dict[str, Any]] = []
    for device_id in ids:
        diagnosis = diagnose(histories[device_id], now=now)
        found[device_id] = diagnosis
        state = states.get(device_id)
        latest = state.latest_report if state is not None else None
        fw = latest.get("fw") if isinstance(latest, dict) else None
        token = tokens.get(device_id)
        rows.append(
            {
                "device_id": device_id,
                "verdict": diagnosis.verdict.value,
                "action": diagnosis.action.value,
                "rule": diagnosis.evidence[0].rule if diagnosis.evidence else None,
                "evidence": len(diagnosis.evidence),
                "evidence_json": [dataclasses.asdict(e) for e in diagnosis.evidence],
                "fw": fw[:_FW_MAX] if isinstance(fw, str) else None,
                "token_ver": None if token is None else token.ver,
                "token_exp": None if token is None else token.exp,
                "token_published": None if token is None else token.published_at is not None,
                "seen_at": None if state is None else state.last_seen,
                "diagnosed_at": now,
            }
        )
    repo.put_verdicts(session, rows)
    return found


@dataclass(frozen=True, slots=True)
class VerdictPass:
    diagnosed: int


class VerdictJob:
    """Re-diagnoses due devices in batches (see the module docstring)."""

    name = "health-verdicts"

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        interval_s: float = 10.0,
        min_gap_s: int = 60,
        max_age_s: int = 600,
        batch: int = 100,
        max_batches: int = 40,
    ) -> None:
        self._store = store
        self._clock = clock
        self.interval_s = interval_s
        self._min_gap_s = min_gap_s
        self._max_age_s = max_age_s
        self._batch = batch
        self._max_batches = max_batches

    def _due(self, now: int) -> list[str]:
        with self._store.transaction() as tx:
            return list(
                repo.due_verdicts(
                    tx,
                    now=now,
                    min_gap_s=self._min_gap_s,
                    max_age_s=self._max_age_s,
                    limit=self._batch * self._max_batches,
                )
            )

    def _diagnose(self, device_ids: list[str], now: int) -> None:
        with self._store.transaction() as tx:
            refresh_verdicts(tx, device_ids, now=now)

    async def run_once(self) -> VerdictPass:
        now = self._clock()
        due = await asyncio.to_thread(self._due, now)
        for start in range(0, len(due), self._batch):
            await asyncio.to_thread(self._diagnose, due[start : start + self._batch], now)
        return VerdictPass(diagnosed=len(due))
