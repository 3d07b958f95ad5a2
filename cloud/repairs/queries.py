"""Repairs' reads, inside the caller's session."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.devices.access import visible_installation_ids
from cloud.repairs.rules import TERMINAL, Status
from cloud.repairs.tables import RepairEventRow, RepairRow, ShipmentRow

__all__ = ["event_count", "events", "open_repair", "repairs", "shipments"]


def repairs(
    session: Session,
    principal: Principal,
    *,
    status: Status | None,
    device_id: str | None,
    ticket_id: int | None,
    limit: int,
    offset: int,
) -> Sequence[RepairRow]:
    """The repairs ``principal`` may see, newest first, filtered."""
    query = select(RepairRow).order_by(RepairRow.id.desc())
    if status is not None:
        query = query.where(RepairRow.status == status)
    if device_id is not None:
        query = query.where(RepairRow.device_id == device_id)
    if ticket_id is not None:
        query = query.where(RepairRow.ticket_id == ticket_id)
    scope = visible_installation_ids(session, principal)
    if scope is not None:
        query = query.where(RepairRow.installation_id.in_(scope))
    return session.scalars(query.limit(limit).offset(offset)).all()


def open_repair(session: Session, device_id: str) -> RepairRow | None:
    """The device's repair that is neither closed nor cancelled, if any."""
    query = select(RepairRow).where(
        RepairRow.device_id == device_id, RepairRow.status.not_in(list(TERMINAL))
    )
    return session.scalars(query.limit(1)).first()


def shipments(session: Session, repair_id: int) -> Sequence[ShipmentRow]:
    query = select(ShipmentRow).where(ShipmentRow.repair_id == repair_id)
    return session.scalars(query.order_by(ShipmentRow.id)).all()


def events(session: Session, repair_id: int) -> Sequence[RepairEventRow]:
    query = select(RepairEventRow).where(RepairEventRow.repair_id == repair_id)
    return session.scalars(query.order_by(RepairEventRow.id)).all()


def event_count(session: Session, repair_id: int) -> int:
    query = select(func.count()).where(RepairEventRow.repair_id == repair_id)
    return int(session.scalar(query) or 0)
