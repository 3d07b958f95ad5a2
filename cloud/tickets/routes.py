"""Support tickets, SLAs and RMA approval."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.http.errors import documented
from cloud.tickets.deps import TicketsDep
from cloud.tickets.rules import Stage
from cloud.tickets.schemas import (
    Attach,
    MessageCreate,
    RmaOut,
    RmaRefusedOut,
    RmaRequest,
    StageChange,
    TicketCreate,
)
from cloud.tickets.service import TicketView

__all__ = ["router"]

router = APIRouter(prefix="/tickets", tags=["tickets"])


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
