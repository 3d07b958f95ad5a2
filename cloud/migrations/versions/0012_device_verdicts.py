"""The verdict kept per device, so the fleet is counted and paged without diagnosing it all;
an index on the devices' online state, which the fleet's counts read.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_verdicts",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("rule", sa.String(64), nullable=True),
        sa.Column("evidence", sa.Integer(), nullable=False),
        sa.Column("evidence_json", sa.JSON(), nullable=False),
        sa.Column("fw", sa.String(64), nullable=True),
        sa.Column("token_ver", sa.BigInteger(), nullable=True),
        sa.Column("token_exp", sa.BigInteger(), nullable=True),
        sa.Column("token_published", sa.Boolean(), nullable=True),
        sa.Column("seen_at", sa.BigInteger(), nullable=True),
        sa.Column("diagnosed_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_device_verdicts_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_verdicts"),
    )
    op.create_index("ix_device_verdicts_verdict", "device_verdicts", ["verdict"])
    op.create_index("ix_device_verdicts_diagnosed_at", "device_verdicts", ["diagnosed_at"])
    op.create_index("ix_device_health_state_online", "device_health_state", ["online"])


def downgrade() -> None:
    op.drop_index("ix_device_health_state_online", table_name="device_health_state")
    op.drop_index("ix_device_verdicts_diagnosed_at", table_name="device_verdicts")
    op.drop_index("ix_device_verdicts_verdict", table_name="device_verdicts")
    op.drop_table("device_verdicts")
