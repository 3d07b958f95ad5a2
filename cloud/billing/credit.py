"""A purchaser's credit: granted by billing staff, used by renewal orders before the card.

A ledger (:class:`~cloud.billing.tables.CreditRow`): a grant adds cents (with a
reason, audited); an order that uses credit writes one ``use`` entry and a
"Credit applied" line of minus that amount, so the order's total (and its
charge and invoice) is what is left to pay; an order fully covered needs no
charge. Credit an order used comes back (``restore``) when the order is not
paid (declined, cancelled) or is given back (voided, refunded, or the line
refunded: the part of the line the card did not pay). Each use and restore has
a unique key, so it happens once however often it is asked for. The amount to
use is the pure rule :func:`credit_to_use`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.users import user
from cloud.billing.errors import BadOrderRequest
from cloud.billing.rules import MAX_ORDER_CENTS
from cloud.billing.tables import CreditRow
from cloud.errors import N_

__all__ = [
    "CREDIT_CODE",
    "balance",
    "credit_to_use",
    "entries",
    "grant",
    "restore",
    "take",
    "used_on",
]

CREDIT_CODE = "CREDIT"  # the product code of an order's "Credit applied" line
_MAX_REASON = 200


def credit_to_use(*, total_cents: int, balance_cents: int) -> int:
    """How much credit an order of ``total_cents`` uses: all it can, never more than the
    order or the balance, never negative. Pure."""
    return max(0, min(total_cents, balance_cents))


def balance(session: Session, user_id: int) -> int:
    """The purchaser's credit balance in cents."""
    query = select(func.coalesce(func.sum(CreditRow.amount_cents), 0))
    return int(session.scalar(query.where(CreditRow.user_id == user_id)) or 0)


def entries(session: Session, user_id: int, *, limit: int = 100) -> Sequence[CreditRow]:
    query = select(CreditRow).where(CreditRow.user_id == user_id)
    return session.scalars(query.order_by(CreditRow.id.desc()).limit(limit)).all()


def grant(
    session: Session, user_id: int, *, amount_cents: int, reason: str, actor: str, now: int
) -> CreditRow:
    """Grant credit to a purchaser; audited.

    Raises:
        UnknownUser: no such user.
        BadOrderRequest: not a positive amount, or no reason.
    """
    if not 0 < amount_cents <= MAX_ORDER_CENTS:
        raise BadOrderRequest(
            N_("credit is a positive amount of cents, at most %(most)s"), most=MAX_ORDER_CENTS
        )
    reason = reason.strip()
    if not 0 < len(reason) <= _MAX_REASON:
        raise BadOrderRequest(N_("say why the credit is granted (1-200 characters)"))
    user(session, user_id, lock=True)  # serialises grants and uses of one purchaser
    row = _entry(session, user_id, amount_cents, "grant", reason, None, None, actor, now)
    audit.record(
        session,
        actor=actor,
        action="credit.grant",
        object_type="user",
        object_id=str(user_id),
        before=None,
        after={"amount_cents": amount_cents, "reason": reason},
        now=now,
    )
    return row


def take(session: Session, user_id: int, *, total_cents: int, actor: str, now: int) -> int:
    """The credit a new order of ``total_cents`` uses (the purchaser locked); not yet written:
    :func:`record_use` writes it once the order has its id."""
    user(session, user_id, lock=True)
    return credit_to_use(total_cents=total_cents, balance_cents=balance(session, user_id))


def record_use(
    session: Session, user_id: int, *, order_id: int, amount_cents: int, actor: str, now: int
) -> None:
    _entry(
        session,
        user_id,
        -amount_cents,
        "use",
        f"order {order_id}",
        order_id,
        f"use:{order_id}",
        actor,
        now,
    )


def used_on(session: Session, order_id: int) -> int:
    """Credit the order used (cents, positive), whatever came back since."""
    query = select(func.coalesce(func.sum(CreditRow.amount_cents), 0)).where(
        CreditRow.order_id == order_id, CreditRow.entry == "use"
    )
    return -int(session.scalar(query) or 0)


def _restored(session: Session, order_id: int) -> int:
    query = select(func.coalesce(func.sum(CreditRow.amount_cents), 0)).where(
        CreditRow.order_id == order_id, CreditRow.entry == "restore"
    )
    return int(session.scalar(query) or 0)


def restore(
    session: Session,
    order_id: int,
    *,
    user_id: int,
    at_most: int | None,
    key: str,
    reason: str,
    actor: str,
    now: int,
) -> int:
    """Give back credit the order used and has not given back (at most ``at_most``), once
    per ``key``; returns the cents restored."""
    if session.scalar(select(CreditRow.id).where(CreditRow.key == key)) is not None:
        return 0
    left = used_on(session, order_id) - _restored(session, order_id)
    amount = left if at_most is None else min(left, at_most)
    if amount <= 0:
        return 0
    _entry(session, user_id, amount, "restore", reason, order_id, key, actor, now)
    return amount


def _entry(
    session: Session,
    user_id: int,
    amount_cents: int,
    entry: str,
    reason: str,
    order_id: int | None,
    key: str | None,
    actor: str,
    now: int,
) -> CreditRow:
    row = CreditRow(
        user_id=user_id,
        amount_cents=amount_cents,
        entry=entry,
        reason=reason[:_MAX_REASON],
        order_id=order_id,
        key=key,
        actor=actor[:120],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row
