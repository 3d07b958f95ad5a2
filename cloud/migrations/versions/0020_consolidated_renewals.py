"""Consolidated renewals, multi-installation checkout.

An order pays for one or more subscriptions: ``subscription_orders`` (one
subscription per order, keyed by the order) becomes ``subscription_order_links``
(one row per order line and subscription); each existing link is copied and
pointed at its order's one line. Order lines name their installation (copied
from their order) and when the line alone was given back.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LINKS = "subscription_order_links"


def upgrade() -> None:
    with op.batch_alter_table("order_lines") as batch:
        batch.add_column(sa.Column("installation_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reversed_at", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE order_lines SET installation_id = "
        "(SELECT orders.installation_id FROM orders WHERE orders.id = order_lines.order_id)"
    )
    op.create_table(
        _LINKS,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=True),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("charge_key", sa.String(160), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=f"fk_{_LINKS}_subscription_id_subscriptions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{_LINKS}"),
        sa.UniqueConstraint("order_id", "subscription_id", name=f"uq_{_LINKS}_order_id"),
        sa.UniqueConstraint("charge_key", name=f"uq_{_LINKS}_charge_key"),
    )
    op.create_index(f"ix_{_LINKS}_order_id", _LINKS, ["order_id"])
    op.create_index(f"ix_{_LINKS}_subscription_id", _LINKS, ["subscription_id"])
    op.create_index(f"ix_{_LINKS}_outcome_created_at", _LINKS, ["outcome", "created_at"])
    op.execute(
        f"INSERT INTO {_LINKS} (order_id, line_id, subscription_id, kind, ends_at, attempt, "
        "months, charge_key, created_at, outcome) SELECT s.order_id, "
        "(SELECT MIN(l.id) FROM order_lines l WHERE l.order_id = s.order_id), "
        "s.subscription_id, s.kind, s.ends_at, s.attempt, s.months, NULL, s.created_at, "
        "s.outcome FROM subscription_orders s ORDER BY s.order_id"
    )
    op.drop_index("ix_subscription_orders_outcome_created_at", table_name="subscription_orders")
    op.drop_index("ix_subscription_orders_subscription_id", table_name="subscription_orders")
    op.drop_table("subscription_orders")
    op.create_table(
        "purchaser_credits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("entry", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(80), nullable=True),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_purchaser_credits"),
        sa.UniqueConstraint("key", name="uq_purchaser_credits_key"),
    )
    op.create_index("ix_purchaser_credits_user_id", "purchaser_credits", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_purchaser_credits_user_id", table_name="purchaser_credits")
    op.drop_table("purchaser_credits")
    op.create_table(
        "subscription_orders",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ends_at", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
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
    op.create_index(
        "ix_subscription_orders_outcome_created_at",
        "subscription_orders",
        ["outcome", "created_at"],
    )
    # an order of several subscriptions keeps its first link only (the old shape holds one)
    op.execute(
        "INSERT INTO subscription_orders (order_id, subscription_id, kind, ends_at, attempt, "
        f"months, created_at, outcome) SELECT order_id, subscription_id, kind, ends_at, attempt, "
        f"months, created_at, outcome FROM {_LINKS} WHERE id IN "
        f"(SELECT MIN(id) FROM {_LINKS} GROUP BY order_id)"
    )
    op.drop_index(f"ix_{_LINKS}_outcome_created_at", table_name=_LINKS)
    op.drop_index(f"ix_{_LINKS}_subscription_id", table_name=_LINKS)
    op.drop_index(f"ix_{_LINKS}_order_id", table_name=_LINKS)
    op.drop_table(_LINKS)
    with op.batch_alter_table("order_lines") as batch:
        batch.drop_column("reversed_at")
        batch.drop_column("installation_id")
