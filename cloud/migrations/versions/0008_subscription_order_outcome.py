"""What became of each subscription order's payment: applied, refunded, reversed, cancelled.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscription_orders") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
    # orders paid before this revision were applied by the old code (or dropped: unknown)
    op.execute(
        "UPDATE subscription_orders SET outcome = 'applied' WHERE order_id IN "
        "(SELECT id FROM orders WHERE status = 'Succeed')"
    )
    op.create_index(
        "ix_subscription_orders_outcome_created_at",
        "subscription_orders",
        ["outcome", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_subscription_orders_outcome_created_at", table_name="subscription_orders")
    with op.batch_alter_table("subscription_orders") as batch:
        batch.drop_column("outcome")
