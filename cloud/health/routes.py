"""Device health: latest state and diagnosis, history, fleet overview, rejects, commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.health.commands import CommandView
from cloud.health.deps import HealthDep
from cloud.health.schemas import (
    CommandCreate,
    DeviceHealthOut,
    FleetOut,
    HistoryOut,
    HourlyPageOut,
    IngestOut,
)
from cloud.http.errors import documented
from cloud.http.schemas import DEVICE_ID_PATTERN

__all__ = ["router"]

router = APIRouter(tags=["health"])

DeviceId = Path(pattern=DEVICE_ID_PATTERN)
Reader = Annotated[Principal, Depends(require(Permission.HEALTH_READ))]
FleetReader = Annotated[Principal, Depends(require(Permission.FLEET_READ))]
Commander = Annotated[Principal, Depends(require(Permission.COMMANDS))]


@router.get("/devices/{device_id}/health", responses=documented({404: "unknown device"}))
def device_health(
    principal: Reader, service: HealthDep, device_id: str = DeviceId
) -> DeviceHealthOut:
    """Latest report, online/offline, and the diagnosis with its evidence."""
    return service.device_health(principal, device_id)


@router.get("/devices/{device_id}/health/history", responses=documented({404: "unknown device"}))
def device_history(
    principal: Reader,
    service: HealthDep,
    device_id: str = DeviceId,
    since: Annotated[int, Query(ge=0, le=2**53)] = 0,
    until: Annotated[int, Query(ge=0, le=2**53)] = 2**53,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HistoryOut:
    """Raw reports of the device with ``since <= ts <= until``, oldest first, paginated."""
    return service.history(
        principal, device_id, since=since, until=until, limit=limit, offset=offset
    )


@router.get("/devices/{device_id}/health/hourly", responses=documented({404: "unknown device"}))
def device_hourly(
    principal: Reader,
    service: HealthDep,
    device_id: str = DeviceId,
    since: Annotated[int, Query(ge=0, le=2**53)] = 0,
    until: Annotated[int, Query(ge=0, le=2**53)] = 2**53,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HourlyPageOut:
    """Hourly aggregates (reports older than the raw retention) with ``since <= hour <= until``."""
    return service.hourly(
        principal, device_id, since=since, until=until, limit=limit, offset=offset
    )


@router.get("/health/fleet")
def fleet(
    principal: Reader,
    service: HealthDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> FleetOut:
    """Counts of all the principal's devices by verdict, and a page of the ones needing attention.

    Read from the verdict kept per device (a job re-diagnoses devices heard
    from since, and every device at least every 10 minutes; a device never
    diagnosed is diagnosed on the spot): ``verdicts_as_of`` is the oldest
    verdict's time, ``attention_total`` every device needing attention.
    """
    return service.fleet(principal, limit=limit, offset=offset)


@router.get("/health/rejects")
def rejects(principal: FleetReader, service: HealthDep) -> dict[str, int]:
    """How many health / status / cmd-res messages were refused, by reason (every device)."""
    return service.rejects()


@router.get("/health/ingest")
def ingest(principal: FleetReader, service: HealthDep) -> IngestOut:
    """This worker's health ingest: its backlog and what it stored since it started."""
    return service.ingest_status()


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
    body: CommandCreate, principal: Commander, service: HealthDep, device_id: str = DeviceId
) -> CommandView:
    """Send ``self_test``, ``fetch_log`` or ``reboot``; poll the command for its result."""
    return await service.send_command(
        principal, device_id, cmd=body.cmd, args=body.args.model_dump(exclude_none=True)
    )


@router.get(
    "/devices/{device_id}/commands/{command_id}",
    responses=documented({404: "unknown device or command"}),
)
def get_command(
    principal: Commander,
    service: HealthDep,
    device_id: str = DeviceId,
    command_id: str = Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$"),
) -> CommandView:
    return service.command(principal, device_id, command_id)
