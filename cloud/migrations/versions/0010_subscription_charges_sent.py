"""Renewal charges ever sent per subscription: part of each charge's idempotency key.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 for existing rows: a charge in flight keeps its old key (no serial in it)
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column("charges_sent", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("charges_sent")
