"""Dashboard pages of device health: the fleet overview and the device page.

The device page lives here, not in ``cloud.devices.pages``: it shows the
device's health, diagnosis and commands beside its entitlement, and
``cloud.devices`` sits below ``cloud.health`` in the import layers (health
may use devices, never the other way round).

- ``GET /fleet`` (fleet:read): counts at a glance and one page of devices,
  read from the verdict kept per device (:mod:`cloud.health.verdicts`).
- ``GET /devices/{id}`` (devices:read, scoped): entitlement as the device
  holds it, the diagnosis kept for it with its evidence (``POST
  /devices/{id}/diagnose`` diagnoses it now), charts, recent commands.
- ``GET /devices/{id}/charts.json``: the charts' data (fetched by
  ``/static/health/device-charts.js``).
- ``POST /devices/{id}/commands`` (commands): send self_test / fetch_log /
  reboot; an htmx request gets the command's fragment, which polls
  ``GET /devices/{id}/commands/{cid}`` every second until answered; without
  JavaScript the browser is sent back to the page.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import Permission
from cloud.devices.deps import DevicesDep
from cloud.errors import UnknownDevice
from cloud.health.deps import HealthDep
from cloud.health.rules.fleet import FleetQuery, Freshness, Online
from cloud.health.service import CHART_RANGES
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.web.flash import redirect
from cloud.web.forms import CheckedForm
from cloud.web.templates import render, translator

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

FleetReader = Annotated[Principal, Depends(page_require(Permission.FLEET_READ))]
DeviceReader = Annotated[Principal, Depends(page_require(Permission.DEVICES_READ))]
Commander = Annotated[Principal, Depends(page_require(Permission.COMMANDS))]
DeviceId = Path(pattern=DEVICE_ID_PATTERN)
CommandId = Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")

PER_PAGE = 50
Sort = Literal["device", "installation", "kind", "verdict", "online", "fw", "last_seen", "token"]
# "" is "any" (what the filter form's first option sends)
VerdictFilter = Literal["healthy", "fix_remotely", "rma_recommended", "pending", ""]
KindFilter = Literal["gateway", "camera", "counter", ""]
OnlineFilter = Literal["online", "offline", "unknown", ""]
FreshnessFilter = Literal["fresh", "expiring", "undelivered", "expired", "none", ""]
Range = Literal["1h", "24h", "7d", "30d"]
_COMMANDS = ("self_test", "fetch_log", "reboot")


@router.get("/fleet")
def fleet_page(
    request: Request,
    principal: FleetReader,
    health: HealthDep,
    kind: KindFilter = "",
    verdict: VerdictFilter = "",
    online: OnlineFilter = "",
    entitlement: FreshnessFilter = "",
    q: Annotated[str, Query(max_length=64)] = "",
    sort: Sort = "verdict",
    dir: Literal["asc", "desc"] = "desc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """Every device by kind, online/offline, verdict, firmware and entitlement freshness."""
    query = FleetQuery(
        kind=kind or None,
        verdict=verdict or None,
        online=Online(online) if online else None,
        freshness=Freshness(entitlement) if entitlement else None,
        search=q.strip(),
        sort=sort,
        descending=dir == "desc",
        limit=PER_PAGE,
        offset=(page - 1) * PER_PAGE,
    )
    view = health.fleet_view(principal, query)
    pages = max(1, math.ceil(view.counts.matching / PER_PAGE))
    return render(
        request,
        "health/fleet.html",
        {
            "counts": view.counts,
            "rows": view.rows,
            "filters": {
                "kind": kind,
                "verdict": verdict,
                "online": online,
                "entitlement": entitlement,
                "q": q.strip(),
            },
            "filtered": any((kind, verdict, online, entitlement, q.strip())),
            "sort": sort,
            "dir": dir,
            "page": page,
            "pages": pages,
        },
    )


def _entitlement(devices: Any, principal: Principal, device_id: str) -> dict[str, Any] | None:
    try:
        return dict(devices.entitlement(principal, device_id).claims)
    except UnknownDevice:  # the device exists (checked first): it has no token yet
        return None


@router.get("/devices/{device_id}")
def device_page(
    request: Request,
    principal: DeviceReader,
    devices: DevicesDep,
    health: HealthDep,
    device_id: str = DeviceId,
    range: Range = "24h",  # noqa: A002  the query parameter's name
) -> Response:
    """One device: entitlement, diagnosis with evidence, charts, commands."""
    device = devices.get(principal, device_id)
    claims = _entitlement(devices, principal, device_id)
    state, diagnosed_at = health.kept_health(principal, device_id)
    may_command = Permission.COMMANDS.value in getattr(request.state, "permissions", ())
    commands = health.recent_commands(principal, device_id) if may_command else []
    features = sorted((claims or {}).get("ent", {}).items())
    return render(
        request,
        "health/device.html",
        {
            "device": device,
            "claims": claims,
            "features": features,
            "health": state,
            "diagnosed_at": diagnosed_at,
            "latest": state.latest or {},
            "commands": commands,
            "range": range,
            "ranges": list(CHART_RANGES),
            "command_names": _COMMANDS,
        },
    )


@router.post("/devices/{device_id}/diagnose")
def diagnose_now(
    request: Request,
    principal: DeviceReader,
    health: HealthDep,
    form: CheckedForm,
    device_id: str = DeviceId,
) -> Response:
    """Diagnose the device now (and keep that verdict); back to its page."""
    health.device_health(principal, device_id)
    text = translator(request).gettext("Diagnosed just now.")
    return redirect(f"/devices/{device_id}#diagnosis-title", text)


@router.get("/devices/{device_id}/charts.json")
def device_charts(
    principal: DeviceReader,
    health: HealthDep,
    device_id: str = DeviceId,
    range: Range = "24h",  # noqa: A002
) -> JSONResponse:
    """The device page's chart data over ``range``, bucketed (see HealthService.charts)."""
    return JSONResponse(
        health.charts(principal, device_id, span=range), headers={"Cache-Control": "no-store"}
    )


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


@router.post("/devices/{device_id}/commands")
async def send_command(
    request: Request,
    principal: Commander,
    health: HealthDep,
    form: CheckedForm,
    device_id: str = DeviceId,
) -> Response:
    """Send a command; htmx gets its live fragment, a plain form post goes back to the page."""
    cmd = str(form.get("cmd", ""))
    _ = translator(request).gettext
    if cmd not in _COMMANDS:
        return redirect(f"/devices/{device_id}", _("Unknown command."), level="error")
    view = await health.send_command(principal, device_id, cmd=cmd, args={})
    if _is_htmx(request):
        return render(request, "health/_command.html", {"command": view, "device_id": device_id})
    text = _("Command sent; its result appears under Commands.")
    return redirect(f"/devices/{device_id}#commands", text, level="info")


@router.get("/devices/{device_id}/commands/{command_id}")
def command_fragment(
    request: Request,
    principal: Commander,
    health: HealthDep,
    device_id: str = DeviceId,
    command_id: str = CommandId,
) -> Response:
    """One command's fragment (it keeps polling while the command is pending)."""
    view = health.command(principal, device_id, command_id)
    return render(request, "health/_command.html", {"command": view, "device_id": device_id})
