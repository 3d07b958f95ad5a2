"""Tables: health reports, device state, aggregates, rejects, commands and support tickets.

``health_reports`` keeps each ``(device_id, seq)`` once (the ingest inserts
with ON CONFLICT DO NOTHING); raw rows older than the retention are folded
into ``health_hourly`` (count / sum / min / max per metric and hour) and then
deleted.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from protocol.topics import DEVICE_ID_MAX_LEN

__all__ = [
    "CommandRow",
    "CommandStatus",
    "DeviceVerdictRow",
    "HealthHourlyRow",
    "HealthRejectRow",
    "HealthReportRow",
    "HealthResendAskRow",
    "HealthStateRow",
    "HealthUnrecoverableRow",
    "StatusEventRow",
]


class CommandStatus(enum.StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    TIMED_OUT = "timed_out"


class HealthReportRow(Base):
    """One health report as received, plus a few numbers pulled out for queries."""

    __tablename__ = "health_reports"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        Index("ix_health_reports_device_id_ts", "device_id", "ts"),
        Index("ix_health_reports_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    mem_used_pct: Mapped[float | None] = mapped_column(Float)
    disk_used_pct: Mapped[float | None] = mapped_column(Float)
    loss_pct: Mapped[float | None] = mapped_column(Float)


class HealthStateRow(Base):
    """Per device: the latest report, online/offline from ``status``, when last heard of."""

    __tablename__ = "device_health_state"
    # the fleet overview counts online/offline from this index, not the rows' JSON
    __table_args__ = (Index("ix_device_health_state_online", "online"),)

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    latest_seq: Mapped[int | None] = mapped_column(BigInteger)
    latest_ts: Mapped[int | None] = mapped_column(BigInteger)
    latest_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    online: Mapped[bool | None] = mapped_column(Boolean)
    status_at: Mapped[int | None] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger)
    reported_token_ver: Mapped[int | None] = mapped_column(BigInteger)  # status's token_ver


class StatusEventRow(Base):
    """Each online/offline change, for the connectivity rules (flapping)."""

    __tablename__ = "device_status_events"
    __table_args__ = (Index("ix_device_status_events_device_id_at", "device_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE")
    )
    online: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[int] = mapped_column(BigInteger)


class HealthHourlyRow(Base):
    """Downsampled history: one row per device, hour (epoch of its start) and metric."""

    __tablename__ = "health_hourly"

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)


class HealthRejectRow(Base):
    """How many health / cmd-res messages were refused, by reason; never what they said."""

    __tablename__ = "health_rejects"

    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    last_at: Mapped[int] = mapped_column(BigInteger)


class CommandRow(Base):
    """A command sent to a device; ``id`` is the correlation id the device echoes."""

    __tablename__ = "device_commands"
    __table_args__ = (
        Index("ix_device_commands_device_id_created_at", "device_id", "created_at"),
        Index("ix_device_commands_status_timeout_at", "status", "timeout_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE")
    )
    cmd: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[CommandStatus] = mapped_column(_enum(CommandStatus, "command_status"))
    ok: Mapped[bool | None] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    timeout_at: Mapped[int] = mapped_column(BigInteger)
    answered_at: Mapped[int | None] = mapped_column(BigInteger)


class HealthResendAskRow(Base):
    """A ``resend_health`` the gap job asked of a device (so no worker asks again soon)."""

    __tablename__ = "health_resend_asks"
    __table_args__ = (Index("ix_health_resend_asks_device_id_asked_at", "device_id", "asked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE")
    )
    from_seq: Mapped[int] = mapped_column(BigInteger)
    to_seq: Mapped[int] = mapped_column(BigInteger)
    asked_at: Mapped[int] = mapped_column(BigInteger)
    command_id: Mapped[str | None] = mapped_column(String(64))


class HealthUnrecoverableRow(Base):
    """Seqs a device answered it no longer holds: never asked for again."""

    __tablename__ = "health_unrecoverable"

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    from_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    to_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    recorded_at: Mapped[int] = mapped_column(BigInteger)


class DeviceVerdictRow(Base):
    """Per device: its diagnosis as last made, so the fleet is counted and paged without
    diagnosing every device on every request (:mod:`cloud.health.verdicts` keeps it).

    ``seen_at`` is the device's ``last_seen`` when it was diagnosed: a later
    ``last_seen`` means there is news to diagnose. ``fw`` and the ``token_*``
    figures are copied in the same pass so the fleet sorts and filters on one row.
    """

    __tablename__ = "device_verdicts"
    __table_args__ = (
        Index("ix_device_verdicts_verdict", "verdict"),
        Index("ix_device_verdicts_diagnosed_at", "diagnosed_at"),
    )

    device_id: Mapped[str] = mapped_column(
        String(DEVICE_ID_MAX_LEN), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    verdict: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str | None] = mapped_column(String(64))  # the first evidence's rule
    evidence: Mapped[int] = mapped_column(Integer)  # how many rules fired
    evidence_json: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # what they saw
    fw: Mapped[str | None] = mapped_column(String(64))
    token_ver: Mapped[int | None] = mapped_column(BigInteger)
    token_exp: Mapped[int | None] = mapped_column(BigInteger)
    token_published: Mapped[bool | None] = mapped_column(Boolean)
    seen_at: Mapped[int | None] = mapped_column(BigInteger)
    diagnosed_at: Mapped[int] = mapped_column(BigInteger)
