"""Tables of repairs: the repair, its timeline, its shipments."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.repairs.rules import Path, ShipmentKind, ShipmentStatus, Status
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = ["RepairEventRow", "RepairRow", "ShipmentRow"]


class RepairRow(Base):
    """One repair of one device: its path (warranty or paid), status and quote."""

    __tablename__ = "repairs"
    __table_args__ = (Index("ix_repairs_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN), index=True)
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT"), index=True
    )
    ticket_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="RESTRICT"), index=True
    )
    rma_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("rma_approvals.id", ondelete="RESTRICT")
    )
    path: Mapped[Path] = mapped_column(_enum(Path, "repair_path"))
    status: Mapped[Status] = mapped_column(_enum(Status, "repair_status"))
    installed_at: Mapped[int] = mapped_column(BigInteger)
    warranty_ends_at: Mapped[int] = mapped_column(BigInteger)
    problem: Mapped[str] = mapped_column(Text)
    ship_to: Mapped[str] = mapped_column(Text)
    quote_cents: Mapped[int | None] = mapped_column(BigInteger)
    quote_text: Mapped[str | None] = mapped_column(String(200))
    order_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("orders.id", ondelete="RESTRICT"), unique=True
    )
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class RepairEventRow(Base):
    """One step of a repair's timeline (the audit log holds the same, with snapshots)."""

    __tablename__ = "repair_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repair_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("repairs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(100))
    step: Mapped[str] = mapped_column(String(32))
    status: Mapped[Status] = mapped_column(_enum(Status, "repair_event_status"))
    note: Mapped[str] = mapped_column(String(500))


class ShipmentRow(Base):
    """A parcel of a repair: which way, carrier and tracking; a reshipment names the lost one."""

    __tablename__ = "repair_shipments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repair_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("repairs.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[ShipmentKind] = mapped_column(_enum(ShipmentKind, "shipment_kind"))
    status: Mapped[ShipmentStatus] = mapped_column(_enum(ShipmentStatus, "shipment_status"))
    carrier: Mapped[str] = mapped_column(String(64))
    tracking: Mapped[str] = mapped_column(String(64))
    # the replacement device's serial (its device id); the other parcels carry the old one
    serial: Mapped[str | None] = mapped_column(String(DEVICE_ID_MAX_LEN))
    replaces_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("repair_shipments.id", ondelete="RESTRICT")
    )
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    ended_at: Mapped[int | None] = mapped_column(BigInteger)
