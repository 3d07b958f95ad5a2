"""Repairs: requests, warranty, quotes, shipments.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = (
    "requested",
    "approved",
    "replacement_sent",
    "quoted",
    "paid",
    "declined",
    "received",
    "repaired",
    "returned",
    "closed",
    "cancelled",
)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def upgrade() -> None:
    op.create_table(
        "repairs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("installation_id", sa.String(64), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("rma_id", sa.Integer(), nullable=True),
        sa.Column("path", _enum("repair_path", "warranty", "paid"), nullable=False),
        sa.Column("status", _enum("repair_status", *_STATUSES), nullable=False),
        sa.Column("installed_at", sa.BigInteger(), nullable=False),
        sa.Column("warranty_ends_at", sa.BigInteger(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("ship_to", sa.Text(), nullable=False),
        sa.Column("quote_cents", sa.BigInteger(), nullable=True),
        sa.Column("quote_text", sa.String(200), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["installation_id"],
            ["installations.id"],
            name="fk_repairs_installation_id_installations",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name="fk_repairs_order_id_orders", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["rma_id"],
            ["rma_approvals.id"],
            name="fk_repairs_rma_id_rma_approvals",
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name="fk_repairs_ticket_id_tickets", ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_repairs"),
        sa.UniqueConstraint("order_id", name="uq_repairs_order_id"),
    )
    op.create_index("ix_repairs_device_id", "repairs", ["device_id"])
    op.create_index("ix_repairs_installation_id", "repairs", ["installation_id"])
    op.create_index("ix_repairs_status", "repairs", ["status"])
    op.create_index("ix_repairs_ticket_id", "repairs", ["ticket_id"])
    op.create_table(
        "repair_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repair_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("status", _enum("repair_event_status", *_STATUSES), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.ForeignKeyConstraint(
            ["repair_id"],
            ["repairs.id"],
            name="fk_repair_events_repair_id_repairs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_repair_events"),
    )
    op.create_index("ix_repair_events_repair_id", "repair_events", ["repair_id"])
    op.create_table(
        "repair_shipments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repair_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind", _enum("shipment_kind", "replacement", "inbound", "return"), nullable=False
        ),
        sa.Column(
            "status", _enum("shipment_status", "active", "reshipped", "cancelled"), nullable=False
        ),
        sa.Column("carrier", sa.String(64), nullable=False),
        sa.Column("tracking", sa.String(64), nullable=False),
        sa.Column("replaces_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["repair_id"],
            ["repairs.id"],
            name="fk_repair_shipments_repair_id_repairs",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["replaces_id"],
            ["repair_shipments.id"],
            name="fk_repair_shipments_replaces_id_repair_shipments",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_repair_shipments"),
    )
    op.create_index("ix_repair_shipments_repair_id", "repair_shipments", ["repair_id"])


def downgrade() -> None:
    op.drop_table("repair_shipments")
    op.drop_table("repair_events")
    op.drop_table("repairs")
