"""Tables and queries of subscriptions: one row per (installation, service), the orders behind it.

The row mirrors :class:`cloud.subscriptions.rules.lifecycle.Subscription`; ``due_at`` is
:func:`~cloud.subscriptions.rules.lifecycle.due_at` of that state, so the renewal job finds
work with one indexed query (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
``version`` is SQLAlchemy's optimistic-locking counter: a write based on a
stale read fails instead of overwriting a newer state.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import (
    NOTICE_MONTHS,
    Status,
    Subscription,
    add_months,
    due_at,
    status_text,
)

__all__ = [
    "Outcome",
    "SubscriptionOrderRow",
    "SubscriptionRow",
    "abandoned_checkouts",
    "add_order_link",
    "due_subscriptions",
    "links_of",
    "load",
    "order_link",
    "refunds_due",
    "save",
    "snapshot",
    "subscription_of",
    "subscriptions_of",
]


class SubscriptionRow(Base):
    """One service of one installation (unique), with its renewal bookkeeping."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("installation_id", "service"),
        # (due_at, id) is the job's ORDER BY: with due_at alone, a batch of 100 out of
        # 100,000 rows due at one moment sorted them all (~110 ms a batch, not ~4 ms)
        Index("ix_subscriptions_due_at", "due_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT")
    )
    service: Mapped[str] = mapped_column(String(64))  # the feature: one per installation
    product_code: Mapped[str] = mapped_column(String(32))
    purchaser_id: Mapped[int] = mapped_column(Integer)
    pay_with: Mapped[str] = mapped_column(String(16))  # how the purchaser pays renewals
    card_token: Mapped[str | None] = mapped_column(String(256))  # the provider's token
    status: Mapped[Status] = mapped_column(_enum(Status, "subscription_status"))
    term_months: Mapped[int] = mapped_column(Integer)
    starts_at: Mapped[int] = mapped_column(BigInteger)
    ends_at: Mapped[int] = mapped_column(BigInteger)  # exclusive, 00:00:00 UTC of a 1st
    auto_renew: Mapped[bool] = mapped_column(Boolean)
    awaiting_payment: Mapped[bool] = mapped_column(Boolean)
    notice_for: Mapped[int | None] = mapped_column(BigInteger)
    next_notice_at: Mapped[int | None] = mapped_column(BigInteger)
    next_charge_at: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    charging: Mapped[int | None] = mapped_column(Integer)
    charge_sent_at: Mapped[int | None] = mapped_column(BigInteger)
    next_retry_at: Mapped[int | None] = mapped_column(BigInteger)
    charges_sent: Mapped[int] = mapped_column(Integer, server_default="0")
    due_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Outcome(enum.StrEnum):
    """What became of an order's payment (NULL: not paid yet, or paid and not yet settled)."""

    APPLIED = "applied"  # delivered: activated or renewed the subscription
    REFUND = "refund"  # could not be delivered: a refund is due (the job retries it)
    REFUNDED = "refunded"  # given back in full
    REVERSED = "reversed"  # applied, then voided or refunded: what it bought was taken back
    CANCELLED = "cancelled"  # never paid: the order was cancelled


class SubscriptionOrderRow(Base):
    """Which subscription event an order pays for (a checkout, a renewal charge).

    Written in the order's own transaction, before any charge is sent, so a
    payment whose answer was lost is still delivered (or refunded) when
    reconciliation finds it; ``outcome`` makes that happen once per order.
    """

    __tablename__ = "subscription_orders"
    __table_args__ = (Index("ix_subscription_orders_outcome_created_at", "outcome", "created_at"),)

    order_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # purchase | renewal | reactivation
    ends_at: Mapped[int] = mapped_column(BigInteger)  # the end the order pays beyond
    attempt: Mapped[int] = mapped_column(Integer)
    months: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str | None] = mapped_column(String(16))


def load(row: SubscriptionRow) -> Subscription:
    """The lifecycle state of a row."""
    return Subscription(
        id=row.id,
        installation_id=row.installation_id,
        product=product(row.product_code),
        purchaser=row.purchaser_id,
        status=row.status,
        term_months=row.term_months,
        start=row.starts_at,
        end=row.ends_at,
        auto_renew=row.auto_renew,
        awaiting_payment=row.awaiting_payment,
        notice_for=row.notice_for,
        attempts=row.attempts,
        charging=row.charging,
        charge_sent_at=row.charge_sent_at,
        next_retry_at=row.next_retry_at,
        charges_sent=row.charges_sent,
    )


def save(
    session: Session,
    sub: Subscription,
    *,
    now: int,
    row: SubscriptionRow | None,
    pay: tuple[str, str | None] | None = None,
) -> SubscriptionRow:
    """Write ``sub`` into ``row`` (a new row when None); flushes (version check included).

    ``pay``: how renewals are paid from now on, ``(pay_with, card_token)``.
    """
    if row is None:
        row = SubscriptionRow(id=sub.id, created_at=now)
        session.add(row)
    if pay is not None:
        row.pay_with, row.card_token = pay
    row.installation_id = sub.installation_id
    row.service = sub.product.feature
    row.product_code = sub.product.code
    row.purchaser_id = sub.purchaser
    row.status = sub.status
    row.term_months = sub.term_months
    row.starts_at = sub.start
    row.ends_at = sub.end
    row.auto_renew = sub.auto_renew
    row.awaiting_payment = sub.awaiting_payment
    row.notice_for = sub.notice_for
    live = sub.status is not Status.EXPIRED and sub.auto_renew
    row.next_notice_at = (
        add_months(sub.end, -NOTICE_MONTHS) if live and sub.notice_for != sub.end else None
    )
    row.next_charge_at = (
        (sub.next_retry_at if sub.attempts else add_months(sub.end, -1)) if live else None
    )
    row.attempts = sub.attempts
    row.charging = sub.charging
    row.charge_sent_at = sub.charge_sent_at
    row.next_retry_at = sub.next_retry_at
    row.charges_sent = sub.charges_sent
    row.due_at = due_at(sub)
    row.updated_at = now
    session.flush()
    return row


def snapshot(sub: Subscription) -> dict[str, Any]:
    """A JSON-able picture of the state, for the audit log."""
    return {
        "product": sub.product.code,
        "purchaser": sub.purchaser,
        "status": sub.status.value,
        "status_text": status_text(sub),
        "term_months": sub.term_months,
        "start": sub.start,
        "end": sub.end,
        "auto_renew": sub.auto_renew,
        "awaiting_payment": sub.awaiting_payment,
        "attempts": sub.attempts,
        "charging": sub.charging,
        "next_retry_at": sub.next_retry_at,
    }


def subscription_of(session: Session, sub_id: str, *, lock: bool = False) -> SubscriptionRow | None:
    query = select(SubscriptionRow).where(SubscriptionRow.id == sub_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def subscription_for_service(
    session: Session, installation_id: str, service: str, *, lock: bool = False
) -> SubscriptionRow | None:
    query = select(SubscriptionRow).where(
        SubscriptionRow.installation_id == installation_id, SubscriptionRow.service == service
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def subscriptions_of(session: Session, installation_id: str) -> Sequence[SubscriptionRow]:
    query = (
        select(SubscriptionRow)
        .where(SubscriptionRow.installation_id == installation_id)
        .order_by(SubscriptionRow.service)
    )
    return session.scalars(query).all()


def due_subscriptions(session: Session, *, now: int, limit: int) -> Sequence[SubscriptionRow]:
    """Rows with work due, locked; rows another worker holds are skipped (PostgreSQL).

    SQLite ignores ``SKIP LOCKED``: its ``BEGIN IMMEDIATE`` already lets one writer in.
    """
    query = (
        select(SubscriptionRow)
        .where(SubscriptionRow.due_at.is_not(None), SubscriptionRow.due_at <= now)
        .order_by(SubscriptionRow.due_at, SubscriptionRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).all()


def add_order_link(
    session: Session,
    *,
    order_id: int,
    subscription_id: str,
    kind: str,
    ends_at: int,
    attempt: int,
    months: int,
    now: int,
) -> None:
    """Remember what an order pays for (a second link for the same order is ignored)."""
    if session.get(SubscriptionOrderRow, order_id) is not None:
        return
    session.add(
        SubscriptionOrderRow(
            order_id=order_id,
            subscription_id=subscription_id,
            kind=kind,
            ends_at=ends_at,
            attempt=attempt,
            months=months,
            created_at=now,
        )
    )
    session.flush()


def order_link(
    session: Session, order_id: int, *, lock: bool = False
) -> SubscriptionOrderRow | None:
    return session.get(SubscriptionOrderRow, order_id, with_for_update=lock or None)


def links_of(session: Session, subscription_id: str) -> Sequence[SubscriptionOrderRow]:
    query = select(SubscriptionOrderRow).where(
        SubscriptionOrderRow.subscription_id == subscription_id
    )
    return session.scalars(query.order_by(SubscriptionOrderRow.order_id)).all()


def abandoned_checkouts(session: Session, *, placed_before: int, limit: int = 100) -> list[int]:
    """Order ids of purchases still unsettled that were placed before ``placed_before``."""
    query = (
        select(SubscriptionOrderRow.order_id)
        .join(SubscriptionRow, SubscriptionRow.id == SubscriptionOrderRow.subscription_id)
        .where(
            SubscriptionOrderRow.outcome.is_(None),
            SubscriptionOrderRow.kind == "purchase",
            SubscriptionOrderRow.created_at <= placed_before,
            SubscriptionRow.status == Status.PENDING,
            SubscriptionRow.awaiting_payment.is_(True),
        )
        .order_by(SubscriptionOrderRow.order_id)
        .limit(limit)
    )
    return list(session.scalars(query))


def refunds_due(session: Session, *, limit: int = 100) -> list[int]:
    """Order ids whose payment could not be delivered and is not given back yet."""
    query = (
        select(SubscriptionOrderRow.order_id)
        .where(SubscriptionOrderRow.outcome == Outcome.REFUND)
        .order_by(SubscriptionOrderRow.order_id)
        .limit(limit)
    )
    return list(session.scalars(query))
