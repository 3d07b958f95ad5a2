"""Health gap repair: the resend_health asks made, and the seqs devices no longer hold.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"], ["devices.id"], name=f"fk_{table}_device_id_devices", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "health_resend_asks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("from_seq", sa.BigInteger(), nullable=False),
        sa.Column("to_seq", sa.BigInteger(), nullable=False),
        sa.Column("asked_at", sa.BigInteger(), nullable=False),
        sa.Column("command_id", sa.String(64), nullable=True),
        _device_fk("health_resend_asks"),
        sa.PrimaryKeyConstraint("id", name="pk_health_resend_asks"),
    )
    op.create_index(
        "ix_health_resend_asks_device_id_asked_at",
        "health_resend_asks",
        ["device_id", "asked_at"],
    )
    op.create_table(
        "health_unrecoverable",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("from_seq", sa.BigInteger(), nullable=False),
        sa.Column("to_seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        _device_fk("health_unrecoverable"),
        sa.PrimaryKeyConstraint("device_id", "from_seq", "to_seq", name="pk_health_unrecoverable"),
    )


def downgrade() -> None:
    op.drop_table("health_unrecoverable")
    op.drop_index("ix_health_resend_asks_device_id_asked_at", table_name="health_resend_asks")
    op.drop_table("health_resend_asks")
