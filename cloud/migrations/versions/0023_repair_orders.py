"""Repair orders have their own kind, ``repair`` (they were ``purchase`` orders of product
``REPAIR``); a repair's shipment records the replacement device's serial.

The CHECK constraint on ``orders.kind`` is rebuilt with the new value: Alembic's batch
mode recreates the table on SQLite and alters it in place on PostgreSQL. Existing repair
orders (a ``purchase`` with a ``REPAIR`` line) become ``repair``; downgrading turns them
back into ``purchase`` orders before the old constraint returns.

Revision ID: 0023
Revises: 0020
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("purchase", "renewal", "reactivation")
_NEW = (*_OLD, "repair")
_REPAIR_ORDERS = "SELECT order_id FROM order_lines WHERE product_code = 'REPAIR'"


def _kind(*values: str) -> sa.Enum:
    return sa.Enum(*values, name="order_kind", native_enum=False, create_constraint=True, length=20)


def _set_kind(old: str, new: str) -> None:
    op.execute(
        sa.text(
            f"UPDATE orders SET kind = :new WHERE kind = :old AND id IN ({_REPAIR_ORDERS})"
        ).bindparams(old=old, new=new)
    )


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("kind", existing_type=_kind(*_OLD), type_=_kind(*_NEW))
    _set_kind("purchase", "repair")
    with op.batch_alter_table("repair_shipments") as batch:
        batch.add_column(sa.Column("serial", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("repair_shipments") as batch:
        batch.drop_column("serial")
    _set_kind("repair", "purchase")
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("kind", existing_type=_kind(*_NEW), type_=_kind(*_OLD))
