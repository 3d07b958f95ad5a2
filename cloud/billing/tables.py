"""Tables: orders, their lines, payment transactions and the refund retry queue.

Amounts are integer cents; times are epoch seconds (UTC). Statuses are the
manual's words (``Processing`` … ``System Processing``), stored as
VARCHAR + CHECK like every enum here.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.billing.rules import OrderKind, OrderStatus, PayWith, TxnType
from cloud.database import Base

__all__ = ["CreditRow", "OrderLineRow", "OrderRow", "RefundRetryRow", "TransactionRow"]


def _enum(cls: type, name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=20,  # "System Processing" is 17
        values_callable=lambda e: [m.value for m in e],
    )


class OrderRow(Base):
    """One order: what was bought for which installation, by whom, and how it is paid.

    ``idempotency_key`` is unique: two workers placing the same renewal make
    one order. ``paid_handled_at`` is set once the on-paid callbacks ran.
    """

    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_installation_id_id", "installation_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[OrderKind] = mapped_column(_enum(OrderKind, "order_kind"))
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT")
    )
    buyer_user_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus, "order_status"), index=True)
    pay_with: Mapped[PayWith] = mapped_column(_enum(PayWith, "pay_with"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    notify: Mapped[list[str]] = mapped_column(JSON)
    paid_handled_at: Mapped[int | None] = mapped_column(BigInteger)
    # the customer hid it from their own history (staff, the books and the audit log see it)
    hidden_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class OrderLineRow(Base):
    """One product line of an order."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    product_code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200))
    months: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(BigInteger)  # quantity × unit_cents
    quantity: Mapped[int] = mapped_column(Integer, server_default="1")
    unit_cents: Mapped[int] = mapped_column(BigInteger)
    # the installation the line is for: an order may span several (a consolidated renewal,
    # a checkout for several installations); NULL only on lines older than that. Indexed:
    # the order belongs to each, and a customer's history finds it through its lines
    installation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # when the line alone was given back (refunded, or its invoice line credited)
    reversed_at: Mapped[int | None] = mapped_column(BigInteger)


class TransactionRow(Base):
    """A charge, void or refund sent to the payment provider, and what became of it.

    ``idempotency_key`` is the key the provider saw (unique); ``parent_id``
    points a void or refund at its charge; ``settled`` is the provider's
    flag as last seen.
    """

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("transactions.id", ondelete="CASCADE")
    )
    type: Mapped[TxnType] = mapped_column(_enum(TxnType, "txn_type"))
    status: Mapped[OrderStatus] = mapped_column(_enum(OrderStatus, "txn_status"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_charge_id: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    settled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    card_last4: Mapped[str | None] = mapped_column(String(4))  # a charge's card, as answered
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class RefundRetryRow(Base):
    """A failed refund waiting for its daily retry; ``exhausted_at`` once people were told."""

    __tablename__ = "refund_retries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    transaction_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("transactions.id", ondelete="CASCADE"), unique=True
    )
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    exhausted_at: Mapped[int | None] = mapped_column(BigInteger)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger)


class CreditRow(Base):
    """One entry of a purchaser's credit ledger (cents): granted (+), used by an order (-),
    given back when that order (or a line of it) was not paid or was reversed (+).

    The balance is the sum. ``key`` makes each use and each restore happen once
    (``use:{order}``, ``restore:{order}``, ``restore:{order}:{line}``); a grant has none.
    """

    __tablename__ = "purchaser_credits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    entry: Mapped[str] = mapped_column(String(16))  # grant | use | restore
    reason: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[int | None] = mapped_column(Integer)
    key: Mapped[str | None] = mapped_column(String(80), unique=True)
    actor: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[int] = mapped_column(BigInteger)
