"""Ticket attachments belong to the message they were sent with.

``ticket_attachments.message_id`` names that message (a message may carry several
files; deleting the message deletes its files' rows). Existing rows keep NULL, which
means "sent on its own, not with a message": before this revision the page and the API
uploaded files by themselves, so no message was sent with them, and guessing the
nearest message would show a file under words that never went with it. The upload route
without a message body still adds such files.

Revision ID: 0024
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket_attachments") as batch:
        batch.add_column(sa.Column("message_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_ticket_attachments_message_id_ticket_messages",
            "ticket_messages",
            ["message_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_ticket_attachments_message_id", ["message_id"])


def downgrade() -> None:
    with op.batch_alter_table("ticket_attachments") as batch:
        batch.drop_index("ix_ticket_attachments_message_id")
        batch.drop_constraint(
            "fk_ticket_attachments_message_id_ticket_messages", type_="foreignkey"
        )
        batch.drop_column("message_id")
