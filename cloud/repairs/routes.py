"""Repairs: request, steps, quote, accept and pay, shipments and their packing slips."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import Response

from cloud.accounts.apikeys import Principal
from cloud.accounts.deps import require
from cloud.accounts.rules import Permission
from cloud.http.errors import documented
from cloud.http.schemas import DEVICE_ID_PATTERN
from cloud.repairs.deps import RepairsDep
from cloud.repairs.rules import Status, Step
from cloud.repairs.schemas import (
    Accept,
    Cancel,
    Quote,
    RepairCreate,
    RepairOut,
    Reship,
    ShipmentCreate,
    StepTaken,
)
from cloud.repairs.service import RepairView, SlipPdf

__all__ = ["router", "slip_response"]

router = APIRouter(prefix="/repairs", tags=["repairs"])

RepairId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ShipmentId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Reader = Annotated[Principal, Depends(require(Permission.TICKETS_READ))]
Writer = Annotated[Principal, Depends(require(Permission.TICKETS_WRITE))]
Payer = Annotated[Principal, Depends(require(Permission.ORDERS_WRITE))]


def slip_response(slip: SlipPdf) -> Response:
    """A packing slip as a PDF download (the API's and the page's)."""
    return Response(
        slip.pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{slip.filename}"'},
    )


def _out(view: RepairView) -> RepairOut:
    return RepairOut.model_validate(dataclasses.asdict(view))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {404: "unknown device or ticket", 409: "the device has an open repair"}, body=True
    ),
)
def request_repair(body: RepairCreate, principal: Writer, service: RepairsDep) -> RepairOut:
    """Request a repair of a device (from a ticket it is attached to, or directly).

    Its warranty (registration date + the configured term) decides: a replacement (approved at
    once after an approved RMA) or a quoted, paid repair.
    """
    return _out(
        service.request(
            principal,
            device_id=body.device_id,
            ticket_id=body.ticket_id,
            problem=body.problem,
            ship_to=body.ship_to,
        )
    )


@router.get("")
def list_repairs(
    principal: Reader,
    service: RepairsDep,
    status: Status | None = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    ticket_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[RepairOut]:
    views = service.list(
        principal,
        status=status,
        device_id=device_id,
        ticket_id=ticket_id,
        limit=limit,
        offset=offset,
    )
    return [_out(v) for v in views]


@router.get("/{repair_id}", responses=documented({404: "unknown repair"}))
def get_repair(repair_id: RepairId, principal: Reader, service: RepairsDep) -> RepairOut:
    return _out(service.get(principal, repair_id))


@router.post(
    "/{repair_id}/steps",
    responses=documented(
        {403: "not the caller's step", 404: "unknown repair", 409: "not in this status"},
        body=True,
    ),
)
def take_step(
    repair_id: RepairId, body: StepTaken, principal: Writer, service: RepairsDep
) -> RepairOut:
    """Approve (in warranty), decline the quote (customer), receive the old device, mark
    repaired, close."""
    return _out(service.step(principal, repair_id, Step(body.step), note=body.note))


@router.post(
    "/{repair_id}/quote",
    responses=documented(
        {403: "staff quote", 404: "unknown repair", 409: "not an open paid repair"}, body=True
    ),
)
def quote(repair_id: RepairId, body: Quote, principal: Writer, service: RepairsDep) -> RepairOut:
    """Quote an out-of-warranty repair (integer cents, in the billing currency)."""
    return _out(
        service.quote(principal, repair_id, amount_cents=body.amount_cents, text=body.description)
    )


@router.post(
    "/{repair_id}/accept",
    responses=documented(
        {
            402: "the card was declined: nothing paid, the repair stays quoted",
            403: "staff never pay",
            404: "unknown repair",
            409: "not quoted",
            502: "the payment provider failed",
        },
        body=True,
    ),
)
async def accept_quote(
    repair_id: RepairId, body: Accept, principal: Payer, service: RepairsDep
) -> RepairOut:
    """Accept the quote and pay it through billing (card now; invoice for an invoiced
    partner); the repair becomes ``paid`` once billing says the order is paid."""
    return _out(await service.accept(principal, repair_id, card_token=body.card_token))


@router.post(
    "/{repair_id}/shipments",
    status_code=status.HTTP_201_CREATED,
    responses=documented(
        {403: "staff ship out", 404: "unknown repair", 409: "not in this status"}, body=True
    ),
)
def add_shipment(
    repair_id: RepairId, body: ShipmentCreate, principal: Writer, service: RepairsDep
) -> RepairOut:
    """Ship the replacement (naming its device's serial) or the repaired device (staff), or
    record the old device's inbound parcel (staff or customer)."""
    return _out(
        service.ship(
            principal,
            repair_id,
            kind=body.kind,
            carrier=body.carrier,
            tracking=body.tracking,
            serial=body.serial,
        )
    )


@router.post(
    "/{repair_id}/shipments/{shipment_id}/reship",
    responses=documented(
        {403: "staff", 404: "unknown repair or shipment", 409: "not active"}, body=True
    ),
)
def reship(
    repair_id: RepairId,
    shipment_id: ShipmentId,
    body: Reship,
    principal: Writer,
    service: RepairsDep,
) -> RepairOut:
    """A lost shipment is sent again: a new shipment replaces it (a lost replacement names
    the serial of the device sent instead)."""
    return _out(
        service.reship(
            principal,
            repair_id,
            shipment_id,
            carrier=body.carrier,
            tracking=body.tracking,
            serial=body.serial,
        )
    )


@router.post(
    "/{repair_id}/shipments/{shipment_id}/cancel",
    responses=documented(
        {403: "staff", 404: "unknown repair or shipment", 409: "the repair moved on"}
    ),
)
def cancel_shipment(
    repair_id: RepairId, shipment_id: ShipmentId, principal: Writer, service: RepairsDep
) -> RepairOut:
    """Cancel a shipment; the repair goes back a step if it rested on it."""
    return _out(service.cancel_shipment(principal, repair_id, shipment_id))


@router.get(
    "/{repair_id}/shipments/{shipment_id}/slip.pdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "the packing slip"},
        **documented({404: "unknown repair or shipment"}),
    },
)
def packing_slip(
    repair_id: RepairId, shipment_id: ShipmentId, principal: Reader, service: RepairsDep
) -> Response:
    """The shipment's packing slip as a PDF."""
    return slip_response(service.slip(principal, repair_id, shipment_id))


@router.post(
    "/{repair_id}/cancel",
    responses=documented(
        {
            403: "not the caller's to cancel (a paid repair: refunds permission)",
            404: "unknown repair",
            409: "shipped or received already",
            502: "the payment provider failed to give the money back",
        },
        body=True,
    ),
)
async def cancel(
    repair_id: RepairId, body: Cancel, principal: Writer, service: RepairsDep
) -> RepairOut:
    """Cancel the repair; a paid one is refunded through billing first."""
    return _out(await service.cancel(principal, repair_id, reason=body.reason))
