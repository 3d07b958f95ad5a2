"""Subscriptions: one row per (installation, service), and the orders that pay for them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    status = sa.Enum(
        "pending",
        "active",
        "expired",
        name="subscription_status",
        native_enum=False,
        create_constraint=True,
        length=16,
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("installation_id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("product_code", sa.String(32), nullable=False),
        sa.Column("purchaser_id", sa.Integer(), nullable=False),
        sa.Column("pay_with", sa.String(16), nullable=False),
        sa.Column("card_token", sa.String(256), nullable=True),
        sa.Column("status", status, nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.BigInteger(), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("auto_renew", sa.Boolean(), nullable=False),
        sa.Column("awaiting_payment", sa.Boolean(), nullable=False),
        sa.Column("notice_for", sa.BigInteger(), nullable=True),
        sa.Column("next_notice_at", sa.BigInteger(), nullable=True),
        sa.Column("next_charge_at", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("charging", sa.Integer(), nullable=True),
        sa.Column("charge_sent_at", sa.BigInteger(), nullable=True),
        sa.Column("next_retry_at", sa.BigInteger(), nullable=True),
        sa.Column("due_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["installation_id"],
            ["installations.id"],
            name="fk_subscriptions_installation_id_installations",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.UniqueConstraint("installation_id", "service", name="uq_subscriptions_installation_id"),
    )
    op.create_index("ix_subscriptions_due_at", "subscriptions", ["due_at", "id"])
    op.create_table(
        "subscription_orders",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name="fk_subscription_orders_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", name="pk_subscription_orders"),
    )
    op.create_index(
        "ix_subscription_orders_subscription_id", "subscription_orders", ["subscription_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_orders_subscription_id", table_name="subscription_orders")
    op.drop_table("subscription_orders")
    op.drop_index("ix_subscriptions_due_at", table_name="subscriptions")
    op.drop_table("subscriptions")
