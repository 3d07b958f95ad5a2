"""Billing: quantity × unit price on order lines, hidden orders, the card of a charge,
companies' invoicing details and contacts' phone numbers.

Existing order lines become one unit of their amount.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COMPANY = (
    ("address", 500),
    ("postcode", 16),
    ("city", 100),
    ("country", 2),
    ("vat_number", 20),
    ("gst_number", 15),
)


def upgrade() -> None:
    with op.batch_alter_table("order_lines") as batch:
        batch.add_column(sa.Column("quantity", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("unit_cents", sa.BigInteger(), nullable=True))
    op.execute("UPDATE order_lines SET unit_cents = amount_cents")
    with op.batch_alter_table("order_lines") as batch:
        batch.alter_column("unit_cents", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("hidden_at", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("card_last4", sa.String(4), nullable=True))
    with op.batch_alter_table("companies") as batch:
        for name, length in _COMPANY:
            batch.add_column(sa.Column(name, sa.String(length), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("phone", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("phone")
    with op.batch_alter_table("companies") as batch:
        for name, _ in reversed(_COMPANY):
            batch.drop_column(name)
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("card_last4")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("hidden_at")
    with op.batch_alter_table("order_lines") as batch:
        batch.drop_column("unit_cents")
        batch.drop_column("quantity")
