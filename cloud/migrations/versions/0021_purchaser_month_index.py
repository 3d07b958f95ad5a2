"""Subscriptions indexed by (purchaser, end): the renewal job gathers a purchaser-month.

The renewal order of one purchaser's month is placed from the database (every charge
in flight of that purchaser's subscriptions ending that month), with those rows held;
both reads are by ``purchaser_id`` and ``ends_at``.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_subscriptions_purchaser_id_ends_at"


def upgrade() -> None:
    op.create_index(_INDEX, "subscriptions", ["purchaser_id", "ends_at"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="subscriptions")
