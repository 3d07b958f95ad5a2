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
from dataclasses import dataclass
from typing import Any

from cloud.accounts.apikeys import Principal
from cloud.bridge import MqttBridge
from cloud.database import Store
from cloud.devices.access import ensure_device_access, visible_installation_ids
from cloud.health import queries as repo
from cloud.health.commands import CommandService, CommandView, UnknownCommand
from cloud.health.ingest import HealthIngest
from cloud.health.rules.diagnostics import Diagnosis, Verdict
from cloud.health.rules.fleet import FleetQuery
from cloud.health.schemas import (
    DeviceHealthOut,
    DiagnosisOut,
    EvidenceOut,
    FleetOut,
    HistoryOut,
    HourlyOut,
    HourlyPageOut,
    IngestOut,
)
from cloud.health.tables import HealthStateRow
from cloud.health.verdicts import refresh_verdicts
from common.clock import Clock

__all__ = ["CHART_RANGES", "FleetView", "HealthService"]

# a device page's chart ranges: name -> (span, bucket), at most ~720 points per chart
CHART_RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, 10),
    "24h": (86_400, 120),
    "7d": (7 * 86_400, 900),
    "30d": (30 * 86_400, 3600),
}

_FLEET_PAGE = 500  # devices never diagnosed, diagnosed together


@dataclass(frozen=True, slots=True)
class FleetView:
    """The fleet overview: counts at a glance and one page of devices, at ``now``."""

    counts: repo.FleetCounts
    rows: list[repo.FleetRow]
    query: FleetQuery
    now: int


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
            diagnosis = self._diagnose_one(tx, device_id, now=now)
            return DeviceHealthOut(
                device_id=device_id,
                online=None if state is None else state.online,
                status_at=None if state is None else state.status_at,
                last_seen=None if state is None else state.last_seen,
                latest=None if state is None else state.latest_report,
                diagnosis=DiagnosisOut.of(diagnosis),
                reported_token_ver=None if state is None else state.reported_token_ver,
            )

    def kept_health(self, principal: Principal, device_id: str) -> tuple[DeviceHealthOut, int]:
        """Latest report, online/offline, and the diagnosis as kept; when it was made.

        The device page reads this: diagnosing a device with 7 days of 10-second
        history takes seconds, so the page shows the verdict the job keeps (fresh
        within a minute of news) and diagnoses only a device never diagnosed;
        :meth:`device_health` (and the page's "diagnose now") diagnose on the spot.

        Raises:
            UnknownDevice: no such device, or not one of the caller's.
        """
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            now = self._clock()
            state = tx.get(HealthStateRow, device_id)
            kept = repo.verdict_of(tx, device_id)
            if kept is None:
                diagnosis = DiagnosisOut.of(self._diagnose_one(tx, device_id, now=now))
                diagnosed_at = now
            else:
                diagnosis = DiagnosisOut(
                    verdict=kept.verdict,
                    action=kept.action,
                    evidence=[EvidenceOut(**e) for e in kept.evidence_json],
                )
                diagnosed_at = kept.diagnosed_at
            out = DeviceHealthOut(
                device_id=device_id,
                online=None if state is None else state.online,
                status_at=None if state is None else state.status_at,
                last_seen=None if state is None else state.last_seen,
                latest=None if state is None else state.latest_report,
                diagnosis=diagnosis,
                reported_token_ver=None if state is None else state.reported_token_ver,
            )
            return out, diagnosed_at

    @staticmethod
    def _diagnose_one(tx: Any, device_id: str, *, now: int) -> Diagnosis:
        """Diagnose one device now and keep its verdict (the fleet then shows the same)."""
        return refresh_verdicts(tx, [device_id], now=now)[device_id]

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

    def _diagnose_missing(self, tx: Any, within: Any, *, now: int) -> None:
        """Devices never diagnosed are diagnosed now, so every count covers every device."""
        missing = repo.devices_without_verdict(tx, within=within)
        for start in range(0, len(missing), _FLEET_PAGE):
            refresh_verdicts(tx, missing[start : start + _FLEET_PAGE], now=now)

    def fleet_view(self, principal: Principal, query: FleetQuery) -> FleetView:
        """Counts and one page of the caller's devices from the verdicts kept per device."""
        now = self._clock()
        with self._store.transaction() as tx:
            scope = visible_installation_ids(tx, principal)
            self._diagnose_missing(tx, scope, now=now)
            counts = repo.fleet_counts(tx, query, within=scope, now=now)
            rows = repo.fleet_page(tx, query, within=scope, now=now)
        return FleetView(counts=counts, rows=rows, query=query, now=now)

    def fleet(self, principal: Principal, *, limit: int = 1000, offset: int = 0) -> FleetOut:
        """Counts of the caller's devices by verdict, and a page of the ones needing attention.

        Read from the verdict kept per device (:mod:`cloud.health.verdicts`);
        ``verdicts_as_of`` says how old the oldest one is.
        """
        query = FleetQuery(
            attention=True, sort="device", descending=False, limit=limit, offset=offset
        )
        view = self.fleet_view(principal, query)
        counts = {v.value: view.counts.by_verdict.get(v.value, 0) for v in Verdict}
        attention = [
            {"device_id": r.device_id, "verdict": r.verdict or "", "action": r.action or ""}
            for r in view.rows
        ]
        more = offset + len(attention) < view.counts.matching
        return FleetOut(
            devices=view.counts.devices,
            by_verdict=counts,
            attention=attention,
            attention_total=view.counts.matching,
            next_offset=offset + len(attention) if more else None,
            verdicts_as_of=view.counts.oldest_verdict_at,
        )

    def charts(self, principal: Principal, device_id: str, *, span: str) -> dict[str, Any]:
        """The device's history over the last ``span`` (a :data:`CHART_RANGES` name), bucketed.

        Raises:
            UnknownDevice: no such device, or not one of the caller's.
        """
        seconds, bucket_s = CHART_RANGES[span]
        now = self._clock()
        # buckets aligned on the clock, so one bucket does not change as time moves on
        until = now - now % bucket_s + bucket_s
        since = until - seconds
        with self._store.transaction() as tx:
            ensure_device_access(tx, principal, device_id, write=False)
            data = repo.series(tx, device_id, since=since, until=until, bucket_s=bucket_s)
            events = repo.status_events(tx, device_id, since=since, until=until)
        return {
            "device_id": device_id,
            "range": span,
            "since": since,
            "until": until,
            "bucket_s": bucket_s,
            "series": data,
            "status": [{"at": e.at, "online": e.online} for e in events],
        }

    def recent_commands(
        self, principal: Principal, device_id: str, *, limit: int = 10
    ) -> list[CommandView]:
        """The device's latest commands, newest first (UnknownDevice if out of scope)."""
        self._check_device(principal, device_id)
        return self._commands.list_for(device_id, limit=limit)

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
