"""Device health as the API uses it: state and diagnosis, history, the fleet, commands.

One :class:`HealthService` per app (built in :func:`cloud.app.create_app`).
Each method checks that the caller may see the device (out of scope answers
like unknown, :mod:`cloud.devices.access`), reads in one transaction, and
diagnoses with the app's clock. Errors are the error tree's (and
:class:`~protocol.commands.BadCommand`, :class:`~protocol.errors.TransportError`
for commands); the app's one handler answers them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cloud.accounts.apikeys import Principal
from cloud.bridge import MqttBridge
from cloud.database import Store
from cloud.devices.access import ensure_device_access, visible_installation_ids
from cloud.health import queries as repo
from cloud.health.commands import CommandService, CommandView, UnknownCommand
from cloud.health.ingest import HealthIngest
from cloud.health.rules.diagnostics import Verdict, diagnose
from cloud.health.schemas import (
    DeviceHealthOut,
    DiagnosisOut,
    FleetOut,
    HistoryOut,
    HourlyOut,
    HourlyPageOut,
    IngestOut,
)
from cloud.health.tables import HealthStateRow
from common.clock import Clock

__all__ = ["HealthService"]

_FLEET_PAGE = 500  # devices whose histories are loaded together


class HealthService:
    """What the health routes read and send, scoped to the caller."""

    def __init__(
        self,
        store: Store,
        commands: CommandService,
        ingest: HealthIngest,
        *,
        bridge: MqttBridge | None,
        clock: Clock,
    ) -> None:
        self._store = store
        self._commands = commands
        self._ingest = ingest
        self._bridge = bridge
        self._clock = clock

    def device_health(self, principal: Principal, device_id: str) -> DeviceHealthOut:
        """Latest report, online/offline, and the diagnosis with its evidence.

        Raises:
            UnknownDevice: no such device, or not one of the caller's.
        """
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            now = self._clock()
            state = tx.get(HealthStateRow, device_id)
            history = repo.diagnosis_history(tx, device_id, now=now)
            return DeviceHealthOut(
                device_id=device_id,
                online=None if state is None else state.online,
                status_at=None if state is None else state.status_at,
                last_seen=None if state is None else state.last_seen,
                latest=None if state is None else state.latest_report,
                diagnosis=DiagnosisOut.of(diagnose(history, now=now)),
            )

    def history(
        self,
        principal: Principal,
        device_id: str,
        *,
        since: int,
        until: int,
        limit: int,
        offset: int,
    ) -> HistoryOut:
        """Raw reports with ``since <= ts <= until``, oldest first."""
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            rows = repo.reports(
                tx, device_id, since=since, until=until, limit=limit + 1, offset=offset
            )
        more = len(rows) > limit
        return HistoryOut(
            device_id=device_id,
            reports=[dict(r) for r in rows[:limit]],
            next_offset=offset + limit if more else None,
        )

    def hourly(
        self,
        principal: Principal,
        device_id: str,
        *,
        since: int,
        until: int,
        limit: int,
        offset: int,
    ) -> HourlyPageOut:
        """Hourly aggregates with ``since <= hour <= until``, oldest first."""
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            rows = repo.hourly(
                tx, device_id, since=since, until=until, limit=limit + 1, offset=offset
            )
            aggregates = [
                HourlyOut(
                    hour=r.hour, metric=r.metric, n=r.n, mean=r.total / r.n, min=r.min, max=r.max
                )
                for r in rows[:limit]
            ]
        return HourlyPageOut(
            device_id=device_id,
            aggregates=aggregates,
            next_offset=offset + limit if len(rows) > limit else None,
        )

    def fleet(self, principal: Principal) -> FleetOut:
        """Every device of the caller's diagnosed: counts by verdict, the ones needing attention.

        The ids are walked in pages of ``_FLEET_PAGE``, each page's histories
        loaded in a few queries.
        """
        now = self._clock()
        counts: Counter[str] = Counter({v.value: 0 for v in Verdict})
        attention = []
        devices = 0
        with self._store.transaction() as tx:
            scope = visible_installation_ids(tx, principal)
            after = ""
            while True:
                ids = repo.device_ids_after(tx, after, within=scope, limit=_FLEET_PAGE)
                if not ids:
                    break
                after = ids[-1]
                devices += len(ids)
                histories = repo.diagnosis_histories(tx, ids, now=now)
                for device_id in ids:
                    found = diagnose(histories[device_id], now=now)
                    counts[found.verdict.value] += 1
                    if found.verdict is not Verdict.HEALTHY:
                        attention.append(
                            {
                                "device_id": device_id,
                                "verdict": found.verdict.value,
                                "action": found.action.value,
                            }
                        )
        return FleetOut(devices=devices, by_verdict=dict(counts), attention=attention)

    def rejects(self) -> dict[str, int]:
        """Refused health / status / cmd-res messages by reason (every device)."""
        with self._store.transaction() as tx:
            return repo.rejects(tx)

    def ingest_status(self) -> IngestOut:
        """This worker's health ingest: its backlog and what it stored since it started."""
        totals = self._ingest.totals
        return IngestOut(
            connected=self._bridge is not None and self._bridge.connected,
            pending=self._ingest.pending,
            stored=totals.stored,
            duplicates=totals.duplicates,
            statuses=totals.statuses,
            answers=totals.answers,
            rejected=dict(totals.rejected),
        )

    def _check_device(self, principal: Principal, device_id: str) -> None:
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)

    async def send_command(
        self, principal: Principal, device_id: str, *, cmd: str, args: dict[str, Any]
    ) -> CommandView:
        """Store the command pending and publish it; poll :meth:`command` for its result.

        Raises:
            UnknownDevice: no such device, or not one of the caller's.
            BadCommand: arguments the device would refuse.
            TransportError, CommandsUnavailable: it could not be sent.
        """
        await asyncio.to_thread(self._check_device, principal, device_id)
        requested_by = (
            f"user:{principal.user_id}"
            if principal.user_id is not None
            else f"key:{principal.key_id}"
        )
        return await self._commands.send(
            device_id=device_id, cmd=cmd, args=args, requested_by=requested_by
        )

    def command(self, principal: Principal, device_id: str, command_id: str) -> CommandView:
        """Raises: UnknownDevice, UnknownCommand (also one of another device)."""
        self._check_device(principal, device_id)
        view = self._commands.get(command_id)
        if view.device_id != device_id:
            raise UnknownCommand(f"no command {command_id} of {device_id}")
        return view
