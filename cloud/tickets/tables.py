"""Tables of support tickets: cases, messages, devices, people in copy, RMA approvals."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.tickets.rules import Category, Owner, Stage
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = ["RmaApprovalRow", "TicketCcRow", "TicketDeviceRow", "TicketMessageRow", "TicketRow"]


class TicketRow(Base):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_stage_suggest_close_at", "stage", "suggest_close_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(200))
    category: Mapped[Category] = mapped_column(_enum(Category, "ticket_category"))
    stage: Mapped[Stage] = mapped_column(_enum(Stage, "ticket_stage"))
    next_action: Mapped[Owner] = mapped_column(_enum(Owner, "ticket_owner"))
    installation_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT"), index=True
    )
    opened_by: Mapped[str] = mapped_column(String(100))
    opened_at: Mapped[int] = mapped_column(BigInteger)
    due_at: Mapped[int] = mapped_column(BigInteger)
    suggest_close_at: Mapped[int | None] = mapped_column(BigInteger)
    closed_at: Mapped[int | None] = mapped_column(BigInteger)
    sla_breached_at: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class TicketMessageRow(Base):
    __tablename__ = "ticket_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    author: Mapped[str] = mapped_column(String(100))
    from_customer: Mapped[bool] = mapped_column(Boolean)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)


class TicketDeviceRow(Base):
    """A device serial attached to a ticket (the serial is the device id)."""

    __tablename__ = "ticket_devices"

    ticket_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN), primary_key=True)


class TicketCcRow(Base):
    __tablename__ = "ticket_cc"

    ticket_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(String(254), primary_key=True)


class RmaApprovalRow(Base):
    """An approved RMA and the self-test command that confirmed the hardware fault."""

    __tablename__ = "rma_approvals"
    __table_args__ = (UniqueConstraint("ticket_id", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(Integer, ForeignKey("tickets.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN))
    command_id: Mapped[str] = mapped_column(String(64))
    approved_by: Mapped[str] = mapped_column(String(100))
    approved_at: Mapped[int] = mapped_column(BigInteger)
