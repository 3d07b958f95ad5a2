"""Device health: latest state and diagnosis, history, fleet overview, rejects, commands."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.access import ensure_device_access, visible_installation_ids
from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.devices.tables import DeviceRow
from cloud.errors import CloudError
from cloud.health import repository as repo
from cloud.health.commands import CommandView
from cloud.health.deps import CommandsDep, HealthIngestDep
from cloud.health.rules.diagnostics import Diagnosis, Verdict, diagnose
from cloud.health.tables import HealthReportRow, HealthStateRow
from cloud.http.deps import BridgeDep, ClockDep, StoreDep
from cloud.http.errors import documented, http_error
from cloud.http.inputs import StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN
from protocol.commands import MAX_LOG_BYTES, BadCommand
from protocol.errors import TransportError

__all__ = ["router"]

router = APIRouter(tags=["health"])

DeviceId = Path(pattern=DEVICE_ID_PATTERN)
_FLEET_PAGE = 500  # devices whose histories are loaded together


class EvidenceOut(BaseModel):
    rule: str
    metric: str
    measure: str
    value: float
    values: list[float]
    threshold: float
    window_s: int


class DiagnosisOut(BaseModel):
    verdict: str
    action: str
    evidence: list[EvidenceOut]

    @classmethod
    def of(cls, diagnosis: Diagnosis) -> DiagnosisOut:
        return cls(
            verdict=diagnosis.verdict.value,
            action=diagnosis.action.value,
            evidence=[EvidenceOut(**dataclasses.asdict(e)) for e in diagnosis.evidence],
        )


class DeviceHealthOut(BaseModel):
    device_id: str
    online: bool | None
    status_at: int | None
    last_seen: int | None
    latest: dict[str, Any] | None
    diagnosis: DiagnosisOut


class HistoryOut(BaseModel):
    device_id: str
    reports: list[dict[str, Any]]
    next_offset: int | None


class HourlyOut(BaseModel):
    hour: int  # epoch seconds of the hour's start
    metric: str
    n: int
    mean: float
    min: float
    max: float


class HourlyPageOut(BaseModel):
    device_id: str
    aggregates: list[HourlyOut]
    next_offset: int | None


class FleetOut(BaseModel):
    devices: int
    by_verdict: dict[str, int]
    attention: list[dict[str, str]]  # devices not healthy: id, verdict, action


class IngestOut(BaseModel):
    connected: bool  # this worker's MQTT bridge is connected and subscribed
    pending: int  # received, not committed yet (so not acked)
    stored: int
    duplicates: int
    statuses: int
    answers: int
    rejected: dict[str, int]


class CommandArgs(StrictBody):
    max_bytes: int | None = Field(default=None, ge=1, le=MAX_LOG_BYTES, description="fetch_log")


class CommandCreate(StrictBody):
    cmd: Literal["self_test", "fetch_log", "reboot"]
    args: CommandArgs = Field(default_factory=CommandArgs)


def _device_scope(session: Session, principal: Principal, device_id: str) -> None:
    try:
        ensure_device_access(session, principal, device_id, write=False)
    except CloudError as exc:
        raise http_error(exc) from exc


def _health(session: Session, device_id: str, *, now: int) -> DeviceHealthOut:
    state = session.get(HealthStateRow, device_id)
    history = repo.diagnosis_history(session, device_id, now=now)
    return DeviceHealthOut(
        device_id=device_id,
        online=None if state is None else state.online,
        status_at=None if state is None else state.status_at,
        last_seen=None if state is None else state.last_seen,
        latest=None if state is None else state.latest_report,
        diagnosis=DiagnosisOut.of(diagnose(history, now=now)),
    )


@router.get("/devices/{device_id}/health", responses=documented({404: "unknown device"}))
def device_health(
    principal: Annotated[Principal, Depends(require(Permission.HEALTH_READ))],
    store: StoreDep,
    clock: ClockDep,
    device_id: str = DeviceId,
) -> DeviceHealthOut:
    """Latest report, online/offline, and the diagnosis with its evidence."""
    with store.transaction() as tx:
        _device_scope(tx, principal, device_id)
        return _health(tx, device_id, now=clock())


@router.get("/devices/{device_id}/health/history", responses=documented({404: "unknown device"}))
def device_history(
    principal: Annotated[Principal, Depends(require(Permission.HEALTH_READ))],
    store: StoreDep,
    device_id: str = DeviceId,
    since: Annotated[int, Query(ge=0, le=2**53)] = 0,
    until: Annotated[int, Query(ge=0, le=2**53)] = 2**53,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HistoryOut:
    """Raw reports of the device with ``since <= ts <= until``, oldest first, paginated."""
    with store.transaction() as tx:
        _device_scope(tx, principal, device_id)
        rows = tx.scalars(
            select(HealthReportRow.report)
            .where(
                HealthReportRow.device_id == device_id,
                HealthReportRow.ts >= since,
                HealthReportRow.ts <= until,
            )
            .order_by(HealthReportRow.ts, HealthReportRow.seq)
            .limit(limit + 1)
            .offset(offset)
        ).all()
    more = len(rows) > limit
    return HistoryOut(
        device_id=device_id,
        reports=[dict(r) for r in rows[:limit]],
        next_offset=offset + limit if more else None,
    )


@router.get("/devices/{device_id}/health/hourly", responses=documented({404: "unknown device"}))
def device_hourly(
    principal: Annotated[Principal, Depends(require(Permission.HEALTH_READ))],
    store: StoreDep,
    device_id: str = DeviceId,
    since: Annotated[int, Query(ge=0, le=2**53)] = 0,
    until: Annotated[int, Query(ge=0, le=2**53)] = 2**53,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HourlyPageOut:
    """Hourly aggregates (reports older than the raw retention) with ``since <= hour <= until``."""
    with store.transaction() as tx:
        _device_scope(tx, principal, device_id)
        rows = repo.hourly(tx, device_id, since=since, until=until, limit=limit + 1, offset=offset)
        aggregates = [
            HourlyOut(hour=r.hour, metric=r.metric, n=r.n, mean=r.total / r.n, min=r.min, max=r.max)
            for r in rows[:limit]
        ]
    return HourlyPageOut(
        device_id=device_id,
        aggregates=aggregates,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get("/health/fleet")
def fleet(
    principal: Annotated[Principal, Depends(require(Permission.HEALTH_READ))],
    store: StoreDep,
    clock: ClockDep,
) -> FleetOut:
    """Counts of all the principal's devices by verdict, and the ones needing attention.

    Every device is diagnosed: the ids are walked in pages of ``_FLEET_PAGE``,
    each page's histories loaded in a few queries.
    """
    now = clock()
    counts: Counter[str] = Counter({v.value: 0 for v in Verdict})
    attention = []
    devices = 0
    with store.transaction() as tx:
        scope = visible_installation_ids(tx, principal)
        after = ""
        while True:
            query = select(DeviceRow.id).where(DeviceRow.id > after)
            if scope is not None:
                query = query.where(DeviceRow.installation_id.in_(scope))
            ids = tx.scalars(query.order_by(DeviceRow.id).limit(_FLEET_PAGE)).all()
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


@router.get("/health/rejects")
def rejects(
    principal: Annotated[Principal, Depends(require(Permission.FLEET_READ))],
    store: StoreDep,
) -> dict[str, int]:
    """How many health / status / cmd-res messages were refused, by reason (every device)."""
    with store.transaction() as tx:
        return repo.rejects(tx)


@router.get("/health/ingest")
def ingest(
    principal: Annotated[Principal, Depends(require(Permission.FLEET_READ))],
    consumer: HealthIngestDep,
    bridge: BridgeDep,
) -> IngestOut:
    """This worker's health ingest: its backlog and what it stored since it started."""
    totals = consumer.totals
    return IngestOut(
        connected=bridge is not None and bridge.connected,
        pending=consumer.pending,
        stored=totals.stored,
        duplicates=totals.duplicates,
        statuses=totals.statuses,
        answers=totals.answers,
        rejected=dict(totals.rejected),
    )


@router.post(
    "/devices/{device_id}/commands",
    status_code=status.HTTP_202_ACCEPTED,
    responses=documented(
        {
            404: "unknown device",
            409: "this cloud has no MQTT bridge",
            503: "the broker did not take it",
        },
        body=True,
    ),
)
async def send_command(
    body: CommandCreate,
    principal: Annotated[Principal, Depends(require(Permission.COMMANDS))],
    store: StoreDep,
    commands: CommandsDep,
    device_id: str = DeviceId,
) -> CommandView:
    """Send ``self_test``, ``fetch_log`` or ``reboot``; poll the command for its result."""

    def check() -> None:
        with store.transaction() as tx:
            _device_scope(tx, principal, device_id)

    await asyncio.to_thread(check)
    try:
        view = await commands.send(
            device_id=device_id,
            cmd=body.cmd,
            args=body.args.model_dump(exclude_none=True),
            requested_by=f"user:{principal.user_id}"
            if principal.user_id is not None
            else f"key:{principal.key_id}",
        )
    except CloudError as exc:
        raise http_error(exc) from exc
    except BadCommand as exc:  # e.g. max_bytes given to reboot: FastAPI's 422 shape
        detail = [{"type": "invalid_command", "loc": ["body", "args"], "msg": str(exc)}]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail) from exc
    except TransportError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return view


@router.get(
    "/devices/{device_id}/commands/{command_id}",
    responses=documented({404: "unknown device or command"}),
)
def get_command(
    principal: Annotated[Principal, Depends(require(Permission.COMMANDS))],
    store: StoreDep,
    commands: CommandsDep,
    device_id: str = DeviceId,
    command_id: str = Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$"),
) -> CommandView:
    with store.transaction() as tx:
        _device_scope(tx, principal, device_id)
    try:
        view = commands.get(command_id)
    except CloudError as exc:
        raise http_error(exc) from exc
    if view.device_id != device_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no command {command_id} of {device_id}")
    return view
