"""Tickets as FootfallCam runs them: fields, statuses, third line, tasks, attachments.

The category and stage CHECKs gain the manual's categories (software bug, business
inquiry, accuracy-audit blockade) and the third line; tickets get a status within the
stage (existing ones: from their stage), when they entered it, support's first answer
there, the third line's plan and ETA, a responsible person and the form's five
questions. Action tasks and attachment metadata get their tables.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_CATEGORIES = (
    "technical",
    "service",
    "training",
    "data_accuracy",
    "configuration",
    "device_fault",
)
_CATEGORIES = (*_OLD_CATEGORIES, "software_bug", "business_inquiry", "audit_blockade")
_OLD_STAGES = ("first_line", "second_line", "suggest_close", "closed")
_STAGES = ("first_line", "second_line", "third_line", "suggest_close", "closed")
_STATUSES = ("open", "recheck_approved", "hard_to_config", "suggested_close", "closed")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _ticket_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["ticket_id"], ["tickets.id"], name=f"fk_{table}_ticket_id_tickets", ondelete="CASCADE"
    )


def _checks(categories: Sequence[str], stages: Sequence[str]) -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_constraint("ticket_category", type_="check")
        batch.drop_constraint("ticket_stage", type_="check")
        batch.create_check_constraint("ticket_category", _in("category", categories))
        batch.create_check_constraint("ticket_stage", _in("stage", stages))


def upgrade() -> None:
    _checks(_CATEGORIES, _STAGES)
    with op.batch_alter_table("tickets") as batch:
        # a plain column and its CHECK: batch mode loses an Enum's column on SQLite
        batch.add_column(
            sa.Column("status", sa.String(16), server_default=sa.text("'open'"), nullable=False)
        )
        batch.create_check_constraint("ticket_status", _in("status", _STATUSES))
        batch.add_column(sa.Column("stage_since", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("responded_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("plan", sa.Text(), nullable=True))
        batch.add_column(sa.Column("eta", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("responsible_user_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("questions", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            "fk_tickets_responsible_user_id_users",
            "users",
            ["responsible_user_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index("ix_tickets_responsible_user_id", ["responsible_user_id"])
    op.execute("UPDATE tickets SET status = 'suggested_close' WHERE stage = 'suggest_close'")
    op.execute("UPDATE tickets SET status = 'closed' WHERE stage = 'closed'")
    op.create_table(
        "ticket_tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column(
            "type",
            _enum(
                "ticket_task_type",
                "remote_check",
                "reconfigure",
                "data_recheck",
                "site_visit",
                "rma",
                "development",
                "other",
            ),
            nullable=False,
        ),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("hours", sa.Float(), nullable=False),
        sa.Column("expected_on", sa.Date(), nullable=False),
        sa.Column(
            "status",
            _enum("ticket_task_status", "todo", "doing", "done", "cancelled"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        _ticket_fk("ticket_tasks"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_tasks"),
    )
    op.create_index("ix_ticket_tasks_ticket_id", "ticket_tasks", ["ticket_id"])
    op.create_table(
        "ticket_attachments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(120), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("uploaded_by", sa.String(100), nullable=False),
        sa.Column("from_customer", sa.Boolean(), nullable=False),
        sa.Column("uploaded_at", sa.BigInteger(), nullable=False),
        _ticket_fk("ticket_attachments"),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_attachments"),
    )
    op.create_index("ix_ticket_attachments_ticket_id", "ticket_attachments", ["ticket_id"])
    op.create_index("ix_ticket_attachments_sha256", "ticket_attachments", ["sha256"])


def downgrade() -> None:
    op.drop_table("ticket_attachments")
    op.drop_table("ticket_tasks")
    # the new categories and the third line do not fit the old CHECKs
    op.execute("UPDATE tickets SET stage = 'second_line' WHERE stage = 'third_line'")
    op.execute(
        "UPDATE tickets SET category = 'technical' "
        "WHERE category IN ('software_bug', 'business_inquiry', 'audit_blockade')"
    )
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_responsible_user_id")
        batch.drop_constraint("fk_tickets_responsible_user_id_users", type_="foreignkey")
        batch.drop_constraint("ticket_status", type_="check")
        for column in (
            "questions",
            "responsible_user_id",
            "eta",
            "plan",
            "responded_at",
            "stage_since",
            "status",
        ):
            batch.drop_column(column)
    _checks(_OLD_CATEGORIES, _OLD_STAGES)
