"""Tables of support tickets: cases, messages, devices, people in copy, RMA approvals,
action tasks and attachments (the files themselves live outside the database)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import text

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.tickets.rules import Category, Owner, Stage, Status, TaskStatus, TaskType
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = [
    "RmaApprovalRow",
    "TicketAttachmentRow",
    "TicketCcRow",
    "TicketDeviceRow",
    "TicketMessageRow",
    "TicketRow",
    "TicketTaskRow",
]


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
    status: Mapped[Status] = mapped_column(
        _enum(Status, "ticket_status"), server_default=text("'open'")
    )
    stage_since: Mapped[int | None] = mapped_column(BigInteger)
    responded_at: Mapped[int | None] = mapped_column(BigInteger)
    plan: Mapped[str | None] = mapped_column(Text)  # the third line's plan
    eta: Mapped[int | None] = mapped_column(BigInteger)
    responsible_user_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    # the form's five questions: what, where, when, which device, how
    questions: Mapped[dict[str, str] | None] = mapped_column(JSON)


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


class TicketTaskRow(Base):
    """An action task of support on a ticket: what, how many hours, expected when, status."""

    __tablename__ = "ticket_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[TaskType] = mapped_column(_enum(TaskType, "ticket_task_type"))
    title: Mapped[str] = mapped_column(String(200))
    hours: Mapped[float] = mapped_column(Float)
    expected_on: Mapped[date] = mapped_column(Date)
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus, "ticket_task_status"))
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class TicketAttachmentRow(Base):
    """An attached file's metadata; its bytes are stored under the attachments directory
    named by their SHA-256 (equal files share one). ``message_id`` is the message it was
    sent with; None: sent on its own (every file uploaded before messages carried files)."""

    __tablename__ = "ticket_attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("ticket_messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(120))
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    uploaded_by: Mapped[str] = mapped_column(String(100))
    from_customer: Mapped[bool] = mapped_column(Boolean)
    uploaded_at: Mapped[int] = mapped_column(BigInteger)
