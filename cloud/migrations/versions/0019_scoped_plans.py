"""Per-device and per-user plans, plan changes.

Subscriptions and service grants get a ``scope`` ("" installation-wide,
``device:<id>``, ``user:<ref>``), unique with (installation, service); plan
changes are recorded in ``subscription_plan_changes``.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCOPED = (
    ("subscriptions", "service", "uq_subscriptions_installation_id"),
    ("service_grants", "feature", "uq_service_grants_installation_id"),
)


def upgrade() -> None:
    for table, column, unique in _SCOPED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("scope", sa.String(length=160), server_default="", nullable=False)
            )
            batch.drop_constraint(unique, type_="unique")
            batch.create_unique_constraint(unique, ["installation_id", column, "scope"])
    op.create_table(
        "subscription_plan_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("from_code", sa.String(length=32), nullable=False),
        sa.Column("to_code", sa.String(length=32), nullable=False),
        sa.Column("days_left", sa.Integer(), nullable=False),
        sa.Column("difference_cents", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_plan_changes_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscription_plan_changes"),
    )
    op.create_index(
        "ix_subscription_plan_changes_subscription_id",
        "subscription_plan_changes",
        ["subscription_id"],
    )
    op.create_index(
        "ix_subscription_plan_changes_order_id", "subscription_plan_changes", ["order_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_plan_changes_order_id", "subscription_plan_changes")
    op.drop_index("ix_subscription_plan_changes_subscription_id", "subscription_plan_changes")
    op.drop_table("subscription_plan_changes")
    for table, column, unique in _SCOPED:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(unique, type_="unique")
            batch.create_unique_constraint(unique, ["installation_id", column])
            batch.drop_column("scope")
