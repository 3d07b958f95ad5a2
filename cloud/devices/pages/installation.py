"""The installations pages: the list of those the user may see, and one installation.

The installation's own part (its controllers and devices, its owner and system
integrators) is the devices feature's. Features above devices add their sections to the
page (subscriptions: its services, renewals and purchases) with
:func:`installation_section`, so the page shows them while devices imports none of them
(cloud's order: a feature imports only the features below it). An installation the user
may not see is the same "not found" page as one that does not exist (the services'
scoping).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import page_require
from cloud.accounts.rules import Permission
from cloud.devices.deps import InstallationsDep
from cloud.devices.rules import DeviceKind
from cloud.devices.rules.installations import MAX_DEVICES
from cloud.devices.schemas import InstallationDetail
from cloud.http.schemas import ID_PATTERN
from cloud.web.templates import render

__all__ = ["PER_PAGE", "Section", "SectionMaker", "installation_section", "router"]

router = APIRouter(include_in_schema=False)
Reader = Annotated[Principal, Depends(page_require(Permission.INSTALLATIONS_READ))]
PER_PAGE = 25


@dataclass(frozen=True, slots=True)
class Section:
    """A part of the installation page another feature renders: ``template`` is
    included with ``section`` (this object) in its context, ``data`` holds its values."""

    template: str
    data: Mapping[str, Any] = field(default_factory=dict)


SectionMaker = Callable[[Request, Principal, InstallationDetail], Awaitable[Section | None]]
"""``await maker(request, user, installation)``: a section, or None to show nothing."""

_SECTIONS: list[SectionMaker] = []


def installation_section(maker: SectionMaker) -> SectionMaker:
    """Add ``maker``'s section to every installation page (below the devices and people),
    in the order the features register them; used as a decorator."""
    if maker not in _SECTIONS:
        _SECTIONS.append(maker)
    return maker


@router.get("/installations", response_class=HTMLResponse)
def list_installations(
    request: Request,
    user: Reader,
    service: InstallationsDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: Literal["name", "created", "devices"] = "name",
    direction: Annotated[Literal["asc", "desc"], Query(alias="dir")] = "asc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The installations the user may see: search by name or id, sort, page."""
    search = (q or "").strip() or None
    listing = service.listing(
        user,
        search=search,
        sort=sort,
        descending=direction == "desc",
        limit=PER_PAGE,
        offset=(page - 1) * PER_PAGE,
    )
    pages = max(1, math.ceil(listing.total / PER_PAGE))
    return render(
        request,
        "devices/installations.html",
        {
            "listing": listing,
            "q": search or "",
            "sort": sort,
            "dir": direction,
            "page": page,
            "pages": pages,
        },
    )


@router.get("/installations/{installation_id}", response_class=HTMLResponse)
async def show_installation(
    request: Request,
    user: Reader,
    service: InstallationsDep,
    installation_id: Annotated[str, Path(pattern=ID_PATTERN)],
) -> HTMLResponse:
    """One installation: controllers and devices, owner and integrators, then the
    sections of the features above devices (subscriptions)."""
    detail = service.detail(user, installation_id)  # UnknownInstallation: the 404 page
    people = service.people(user, installation_id)
    sections = [s for maker in _SECTIONS if (s := await maker(request, user, detail))]
    cameras = [d for d in detail.devices if d.kind == DeviceKind.CAMERA]
    return render(
        request,
        "devices/installation.html",
        {
            "installation": detail,
            "people": people,
            # the limit is the controllers' (one configuration file); cameras are not counted
            "controllers": sum(1 for d in detail.devices if d.kind == DeviceKind.GATEWAY),
            "max_devices": MAX_DEVICES,
            "cameras": cameras,
            "sections": sections,
        },
    )
