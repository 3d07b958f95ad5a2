"""Health reports, device state, aggregates, diagnoses, commands and support tickets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"], ["devices.id"], name=f"fk_{table}_device_id_devices", ondelete="CASCADE"
    )


def _ticket_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["ticket_id"], ["tickets.id"], name=f"fk_{table}_ticket_id_tickets", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "health_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("cpu_temp_c", sa.Float(), nullable=True),
        sa.Column("mem_used_pct", sa.Float(), nullable=True),
        sa.Column("disk_used_pct", sa.Float(), nullable=True),
        sa.Column("loss_pct", sa.Float(), nullable=True),
        _device_fk("health_reports"),
        sa.PrimaryKeyConstraint("id", name="pk_health_reports"),
        sa.UniqueConstraint("device_id", "seq", name="uq_health_reports_device_id"),
    )
    op.create_index("ix_health_reports_device_id_ts", "health_reports", ["device_id", "ts"])
    op.create_index("ix_health_reports_received_at", "health_reports", ["received_at"])
    op.create_table(
        "device_health_state",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("latest_seq", sa.BigInteger(), nullable=True),
        sa.Column("latest_ts", sa.BigInteger(), nullable=True),
        sa.Column("latest_report", sa.JSON(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("status_at", sa.BigInteger(), nullable=True),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        _device_fk("device_health_state"),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_health_state"),
    )
    op.create_table(
        "device_status_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        _device_fk("device_status_events"),
        sa.PrimaryKeyConstraint("id", name="pk_device_status_events"),
    )
    op.create_index(
        "ix_device_status_events_device_id_at", "device_status_events", ["device_id", "at"]
    )
    op.create_table(
        "health_hourly",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        _device_fk("health_hourly"),
        sa.PrimaryKeyConstraint("device_id", "hour", "metric", name="pk_health_hourly"),
    )
    op.create_table(
        "health_rejects",
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("reason", name="pk_health_rejects"),
    )
    op.create_table(
        "device_commands",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("cmd", sa.String(16), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column(
            "status", _enum("command_status", "pending", "answered", "timed_out"), nullable=False
        ),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("timeout_at", sa.BigInteger(), nullable=False),
        sa.Column("answered_at", sa.BigInteger(), nullable=True),
        _device_fk("device_commands"),
        sa.PrimaryKeyConstraint("id", name="pk_device_commands"),
    )
    op.create_index(
        "ix_device_commands_device_id_created_at", "device_commands", ["device_id", "created_at"]
    )
    op.create_index(
        "ix_device_commands_status_timeout_at", "device_commands", ["status", "timeout_at"]
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column(
            "category",
            _enum(
                "ticket_category",
                "technical",
                "service",
                "training",
                "data_accuracy",
                "configuration",
                "device_fault",
            ),
            nullable=False,
        ),
        sa.Column(
            "stage",
            _enum("ticket_stage", "first_line", "second_line", "suggest_close", "closed"),
            nullable=False,
        ),
        sa.Column(
            "next_action", _enum("ticket_owner", "support", "customer", "nobody"), nullable=False
        ),
        sa.Column("installation_id", sa.String(64), nullable=True),
        sa.Column("opened_by", sa.String(100), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("suggest_close_at", sa.BigInteger(), nullable=True),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("sla_breached_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["installation_id"],
            ["installations.id"],
            name="fk_tickets_installation_id_installations",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_installation_id", "tickets", ["installation_id"])
    op.create_index("ix_tickets_stage_suggest_close_at", "tickets", ["stage", "suggest_close_at"])
    op.create_table(
        "ticket_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("from_customer", sa.Boolean(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _ticket_fk("ticket_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_messages"),
    )
    op.create_index("ix_ticket_messages_ticket_id", "ticket_messages", ["ticket_id"])
    op.create_table(
        "ticket_devices",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        _ticket_fk("ticket_devices"),
        sa.PrimaryKeyConstraint("ticket_id", "device_id", name="pk_ticket_devices"),
    )
    op.create_table(
        "ticket_cc",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        _ticket_fk("ticket_cc"),
        sa.PrimaryKeyConstraint("ticket_id", "email", name="pk_ticket_cc"),
    )
    op.create_table(
        "rma_approvals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("command_id", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(100), nullable=False),
        sa.Column("approved_at", sa.BigInteger(), nullable=False),
        _ticket_fk("rma_approvals"),
        sa.PrimaryKeyConstraint("id", name="pk_rma_approvals"),
        sa.UniqueConstraint("ticket_id", "device_id", name="uq_rma_approvals_ticket_id"),
    )


def downgrade() -> None:
    for table in (
        "rma_approvals",
        "ticket_cc",
        "ticket_devices",
        "ticket_messages",
        "tickets",
        "device_commands",
        "health_rejects",
        "health_hourly",
        "device_status_events",
        "device_health_state",
        "health_reports",
    ):
        op.drop_table(table)
