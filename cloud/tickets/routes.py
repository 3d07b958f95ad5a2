"""Support tickets, SLAs and RMA approval."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import BaseModel, Field

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.http.errors import documented
from cloud.http.inputs import BY_VALUE, StrictBody
from cloud.http.schemas import DEVICE_ID_PATTERN, ID_PATTERN
from cloud.tickets.deps import TicketsDep
from cloud.tickets.rules import Category, Stage
from cloud.tickets.service import TicketView

__all__ = ["router"]

router = APIRouter(prefix="/tickets", tags=["tickets"])

_EMAIL = r"^[^@\x00-\x20\x7f-\x9f]{1,64}@[^@\x00-\x20\x7f-\x9f]{1,189}$"  # no spaces, no controls
_TEXT = r"^[^\x00]*$"  # PostgreSQL refuses NUL in text


class TicketCreate(StrictBody):
    category: Annotated[Category, BY_VALUE]
    subject: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    body: str = Field(min_length=1, max_length=20_000, pattern=_TEXT)
    installation_id: str | None = Field(default=None, pattern=ID_PATTERN)
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    cc: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, max_length=20)


class MessageCreate(StrictBody):
    body: str = Field(min_length=1, max_length=20_000, pattern=_TEXT)


class StageChange(StrictBody):
    stage: Annotated[Stage, BY_VALUE]


class Attach(StrictBody):
    device_ids: list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] = Field(
        default_factory=list, max_length=20
    )
    cc: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(default_factory=list, max_length=20)


class RmaRequest(StrictBody):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)


class RmaOut(BaseModel):
    approved: bool
    why: str
    detail: str
    command_id: str | None


class RmaRefusedOut(BaseModel):
    detail: str
    # ticket_closed | device_not_on_ticket | no_self_test | self_test_stale
    # | self_test_error | self_test_passed | remotely_fixable
    why: str


Service = TicketsDep
TicketId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented({403: "no installation named", 404: "unknown installation"}, body=True),
)
def open_ticket(
    body: TicketCreate,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """Open a ticket; it is due after its category's SLA (1 or 3 days)."""
    return service.open(
        principal,
        category=body.category,
        subject=body.subject,
        body=body.body,
        installation_id=body.installation_id,
        device_ids=body.device_ids,
        cc=body.cc,
    )


@router.get("")
def list_tickets(
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_READ))],
    service: Service,
    stage: Stage | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[TicketView]:
    views = service.list(principal, stage=stage, limit=limit, offset=offset)
    return list(views)


@router.get("/{ticket_id}", responses=documented({404: "unknown ticket"}))
def get_ticket(
    ticket_id: TicketId,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_READ))],
    service: Service,
) -> TicketView:
    return service.get(principal, ticket_id)


@router.post(
    "/{ticket_id}/messages",
    responses=documented({404: "unknown ticket", 409: "closed"}, body=True),
)
def add_message(
    ticket_id: TicketId,
    body: MessageCreate,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """A message hands the next action to the other party; a customer reply reopens."""
    return service.add_message(principal, ticket_id, body=body.body)


@router.post(
    "/{ticket_id}/stage",
    responses=documented(
        {403: "customers only close", 404: "unknown ticket", 409: "not allowed"}, body=True
    ),
)
def change_stage(
    ticket_id: TicketId,
    body: StageChange,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    return service.move(principal, ticket_id, to=body.stage)


@router.post(
    "/{ticket_id}/attach", responses=documented({404: "unknown ticket or device"}, body=True)
)
def attach(
    ticket_id: TicketId,
    body: Attach,
    principal: Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))],
    service: Service,
) -> TicketView:
    """Attach device serials and CC addresses."""
    return service.attach(principal, ticket_id, device_ids=body.device_ids, cc=body.cc)


@router.post(
    "/{ticket_id}/rma",
    responses={
        **documented({404: "unknown ticket or device"}, body=True),
        409: {
            "model": RmaRefusedOut,
            "description": "closed ticket, device not attached, or no recent self-test "
            "confirms a hardware fault",
        },
    },
)
def approve_rma(
    ticket_id: TicketId,
    body: RmaRequest,
    principal: Annotated[Principal, Depends(require(Permission.RMA_APPROVE))],
    service: Service,
) -> RmaOut:
    """Approve an RMA of a device attached to this open ticket.

    Only when its latest self-test, answered since the ticket opened and at most
    a day ago, found a hardware fault.
    """
    decision = service.approve_rma(principal, ticket_id, device_id=body.device_id)
    return RmaOut(**dataclasses.asdict(decision))
