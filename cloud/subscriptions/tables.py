"""Tables of subscriptions: one row per (installation, service, scope), the orders behind it.

``scope`` is ``""`` for an installation-wide subscription, ``device:<id>`` for one
device's plan (a camera's video retention) and ``user:<ref>`` for one office user
(:func:`cloud.subscriptions.rules.plans.scope_key`).

The row mirrors :class:`cloud.subscriptions.rules.lifecycle.Subscription`; ``due_at`` is
:func:`~cloud.subscriptions.rules.lifecycle.due_at` of that state, so the renewal job finds
work with one indexed query (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
``version`` is SQLAlchemy's optimistic-locking counter: a write based on a
stale read fails instead of overwriting a newer state.
"""

from __future__ import annotations

import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.database import Base
from cloud.database import enum_column as _enum
from cloud.subscriptions.rules.lifecycle import (
    Status,
)

__all__ = ["Outcome", "PlanChangeRow", "SubscriptionOrderRow", "SubscriptionRow"]


class SubscriptionRow(Base):
    """One service of one installation (unique), with its renewal bookkeeping."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("installation_id", "service", "scope"),
        # (due_at, id) is the job's ORDER BY: with due_at alone, a batch of 100 out of
        # 100,000 rows due at one moment sorted them all (~110 ms a batch, not ~4 ms)
        Index("ix_subscriptions_due_at", "due_at", "id"),
        # the renewal job gathers and holds one purchaser's month (charging.place_ticked)
        Index("ix_subscriptions_purchaser_id_ends_at", "purchaser_id", "ends_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    installation_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("installations.id", ondelete="RESTRICT")
    )
    service: Mapped[str] = mapped_column(String(64))  # the feature: one per installation
    scope: Mapped[str] = mapped_column(String(160), server_default="")  # "" | device:.. | user:..
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
    """Which subscription event an order line pays for (a checkout, a renewal charge).

    One order pays for one or more subscriptions: a consolidated renewal (one
    purchaser's subscriptions ending in one month) has one line, and one link,
    per subscription; ``line_id`` names the order line the link's money is.
    Written in the order's own transaction, before any charge is sent, so a
    payment whose answer was lost is still delivered (or refunded) when
    reconciliation finds it; ``outcome`` makes that happen once per link.
    ``charge_key`` is the renewal charge's own idempotency key (the rule's): one
    charge of a subscription is on one order, whichever batch placed it.
    """

    __tablename__ = "subscription_order_links"
    __table_args__ = (
        UniqueConstraint("order_id", "subscription_id"),
        Index("ix_subscription_order_links_outcome_created_at", "outcome", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(Integer, index=True)
    line_id: Mapped[int | None] = mapped_column(Integer)
    subscription_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # purchase | renewal | reactivation
    ends_at: Mapped[int] = mapped_column(BigInteger)  # the end the order pays beyond
    attempt: Mapped[int] = mapped_column(Integer)
    months: Mapped[int] = mapped_column(Integer)
    charge_key: Mapped[str | None] = mapped_column(String(160), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str | None] = mapped_column(String(16))


class PlanChangeRow(Base):
    """A plan change as quoted and confirmed: what it cost or gave back, and through which order.

    An upgrade's ``order_id`` is the order that charges the prorated difference
    (its link's kind is ``plan_change``; the new plan takes effect when it is paid);
    a downgrade's is the paid order the prorated difference was refunded from.
    ``status``: ``pending`` (upgrade awaiting payment), ``applied``, ``refunded``
    (downgrade: the difference went back), ``reversed`` (the upgrade's payment was
    given back: the old plan is restored), ``cancelled`` (never paid).
    """

    __tablename__ = "subscription_plan_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    from_code: Mapped[str] = mapped_column(String(32))
    to_code: Mapped[str] = mapped_column(String(32))
    days_left: Mapped[int] = mapped_column(Integer)
    difference_cents: Mapped[int] = mapped_column(BigInteger)  # > 0 charged, < 0 refunded
    ends_at: Mapped[int] = mapped_column(BigInteger)  # the end the change was quoted for
    order_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
