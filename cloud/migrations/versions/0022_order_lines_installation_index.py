"""Order lines by installation: an order belongs to each of its lines' installations, so a
partner's or owner's order history looks its orders up through their lines.

Revision ID: 0022
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_order_lines_installation_id"


def upgrade() -> None:
    op.create_index(_INDEX, "order_lines", ["installation_id"])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="order_lines")
