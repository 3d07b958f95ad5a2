"""The token re-sign queue and the entitlement outbox.

``token_resign_queue``: devices whose token must be signed again, one row per
device (jobs queue, workers drain in batches). ``entitlement_outbox``: tokens
stored and not yet published, written in the token's own transaction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "token_resign_queue",
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_token_resign_queue_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", name="pk_token_resign_queue"),
    )
    op.create_index(
        "ix_token_resign_queue_queued_at", "token_resign_queue", ["queued_at", "device_id"]
    )
    op.create_table(
        "entitlement_outbox",
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["issued_tokens.id"],
            name="fk_entitlement_outbox_token_id_issued_tokens",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_id", name="pk_entitlement_outbox"),
    )
    op.create_index("ix_entitlement_outbox_device_id", "entitlement_outbox", ["device_id"])
    op.create_index("ix_entitlement_outbox_created_at", "entitlement_outbox", ["created_at"])
    # current tokens never confirmed published go to the outbox, as a new token would
    op.execute(
        "INSERT INTO entitlement_outbox (token_id, device_id, created_at) "
        "SELECT id, device_id, iat FROM issued_tokens WHERE published_at IS NULL "
        "AND id IN (SELECT max(id) FROM issued_tokens GROUP BY device_id)"
    )


def downgrade() -> None:
    op.drop_index("ix_entitlement_outbox_created_at", table_name="entitlement_outbox")
    op.drop_index("ix_entitlement_outbox_device_id", table_name="entitlement_outbox")
    op.drop_table("entitlement_outbox")
    op.drop_index("ix_token_resign_queue_queued_at", table_name="token_resign_queue")
    op.drop_table("token_resign_queue")
