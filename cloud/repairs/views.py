"""What a repair looks like to its readers: the views the API and the pages show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES
from cloud.billing.rules import OrderStatus
from cloud.billing.tables import OrderRow
from cloud.repairs import queries
from cloud.repairs.notices import repair_number
from cloud.repairs.rules import Path, ShipmentKind, ShipmentStatus, Status, steps
from cloud.repairs.tables import RepairRow, ShipmentRow

__all__ = [
    "EventView",
    "RepairView",
    "ShipmentView",
    "SlipPdf",
    "repair_view",
    "shipment_audit",
    "snapshot",
]


@dataclass(frozen=True, slots=True)
class ShipmentView:
    id: int
    kind: str
    status: str
    carrier: str
    tracking: str
    serial: str | None
    replaces_id: int | None
    created_at: int


@dataclass(frozen=True, slots=True)
class EventView:
    at: int
    actor: str
    step: str
    status: str
    note: str


@dataclass(frozen=True, slots=True)
class RepairView:
    id: int
    number: str
    device_id: str
    installation_id: str
    ticket_id: int | None
    rma_id: int | None
    path: str
    status: str
    in_warranty: bool
    installed_at: int
    warranty_ends_at: int
    problem: str
    ship_to: str
    quote_cents: int | None
    quote_text: str | None
    currency: str
    order_id: int | None
    order_status: str | None
    created_at: int
    updated_at: int
    steps: list[str]  # what the viewer may do now
    shipments: list[ShipmentView]
    events: list[EventView]


@dataclass(frozen=True, slots=True)
class SlipPdf:
    filename: str
    pdf: bytes


def snapshot(row: RepairRow) -> dict[str, Any]:
    """What the audit log keeps of a repair before and after a step."""
    return {
        "status": Status(row.status).value,
        "path": Path(row.path).value,
        "device_id": row.device_id,
        "quote_cents": row.quote_cents,
        "order_id": row.order_id,
    }


def shipment_audit(row: ShipmentRow) -> dict[str, Any]:
    """What the audit log keeps of a new parcel."""
    return {
        "id": row.id,
        "kind": ShipmentKind(row.kind).value,
        "carrier": row.carrier,
        "tracking": row.tracking,
        "serial": row.serial,
        "replaces_id": row.replaces_id,
    }


def repair_view(
    session: Session, row: RepairRow, principal: Principal | None, *, currency: str
) -> RepairView:
    """The repair as its reader sees it: with the steps ``principal`` may take now."""
    order = session.get(OrderRow, row.order_id) if row.order_id is not None else None
    path, status = Path(row.path), Status(row.status)
    may = [] if principal is None else steps(path, status, staff=principal.role in STAFF_ROLES)
    return RepairView(
        id=row.id,
        number=repair_number(row.id),
        device_id=row.device_id,
        installation_id=row.installation_id,
        ticket_id=row.ticket_id,
        rma_id=row.rma_id,
        path=path.value,
        status=status.value,
        in_warranty=path is Path.WARRANTY,
        installed_at=row.installed_at,
        warranty_ends_at=row.warranty_ends_at,
        problem=row.problem,
        ship_to=row.ship_to,
        quote_cents=row.quote_cents,
        quote_text=row.quote_text,
        currency=currency,
        order_id=row.order_id,
        order_status=None if order is None else OrderStatus(order.status).value,
        created_at=row.created_at,
        updated_at=row.updated_at,
        steps=[s.value for s in may],
        shipments=[
            ShipmentView(
                id=s.id,
                kind=ShipmentKind(s.kind).value,
                status=ShipmentStatus(s.status).value,
                carrier=s.carrier,
                tracking=s.tracking,
                serial=s.serial,
                replaces_id=s.replaces_id,
                created_at=s.created_at,
            )
            for s in queries.shipments(session, row.id)
        ],
        events=[
            EventView(
                at=e.at, actor=e.actor, step=e.step, status=Status(e.status).value, note=e.note
            )
            for e in queries.events(session, row.id)
        ],
    )
