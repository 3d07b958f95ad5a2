"""Subscriptions' reads and writes, inside the caller's session; rows to rules' values and back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Select,
    func,
    select,
)
from sqlalchemy.orm import Session

from cloud.billing.tables import OrderLineRow
from cloud.devices.tables import InstallationRow
from cloud.subscriptions.rules.catalogue import product
from cloud.subscriptions.rules.lifecycle import (
    NOTICE_MONTHS,
    ChangePlan,
    Charge,
    Event,
    PlanChangeReversed,
    Status,
    Subscription,
    add_months,
    charge_in_flight,
    due_at,
    status_text,
)
from cloud.subscriptions.rules.plans import PlanChangeQuote
from cloud.subscriptions.rules.renewals import Due
from cloud.subscriptions.tables import (
    Outcome,
    PlanChangeRow,
    SubscriptionOrderRow,
    SubscriptionRow,
)

__all__ = [
    "IN_CHUNK",
    "abandoned_checkouts",
    "due_of",
    "hold_month",
    "unplaced_charges",
    "add_order_link",
    "add_plan_change",
    "downgrades_refunded",
    "plan_change_event",
    "plan_change_waiting",
    "plan_changes_of",
    "set_plan_change_status",
    "due_query",
    "due_subscriptions",
    "ending_between",
    "line_link",
    "links_of",
    "live_scoped",
    "live_scopes",
    "load",
    "order_link",
    "order_links",
    "orders_of_charge_keys",
    "refunds_due",
    "row_values",
    "save",
    "snapshot",
    "STATE_COLUMNS",
    "subscription_for_service",
    "subscription_of",
    "subscriptions_locked",
    "subscriptions_of",
]

IN_CHUNK = 900  # ids or keys a statement (IN lists), under SQLite's 32,766 variables


# every column :func:`load` reads but the two identities (``id``, ``installation_id``): rows
# equal in these are one state to the rule (the renewal sweep decides once for them)
STATE_COLUMNS = (
    "product_code",
    "purchaser_id",
    "status",
    "term_months",
    "starts_at",
    "ends_at",
    "auto_renew",
    "awaiting_payment",
    "notice_for",
    "attempts",
    "charging",
    "charge_sent_at",
    "next_retry_at",
    "charges_sent",
    "scope",
)


def load(row: Any) -> Subscription:
    """The lifecycle state of a row (an ORM row, or a Core row of the table's columns);
    it reads ``id``, ``installation_id`` and :data:`STATE_COLUMNS`."""
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
        scope=row.scope,
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
    for column, value in row_values(sub, now=now).items():
        setattr(row, column, value)
    session.flush()
    return row


def row_values(sub: Subscription, *, now: int) -> dict[str, Any]:
    """The columns a state writes (all but the id, the payment method and the version):
    the one mapping :func:`save` and the renewal sweep's bulk update share."""
    live = sub.status is not Status.EXPIRED and sub.auto_renew
    return {
        "installation_id": sub.installation_id,
        "service": sub.product.feature,
        "scope": sub.scope,
        "product_code": sub.product.code,
        "purchaser_id": sub.purchaser,
        "status": sub.status,
        "term_months": sub.term_months,
        "starts_at": sub.start,
        "ends_at": sub.end,
        "auto_renew": sub.auto_renew,
        "awaiting_payment": sub.awaiting_payment,
        "notice_for": sub.notice_for,
        "next_notice_at": (
            add_months(sub.end, -NOTICE_MONTHS) if live and sub.notice_for != sub.end else None
        ),
        "next_charge_at": (
            (sub.next_retry_at if sub.attempts else add_months(sub.end, -1)) if live else None
        ),
        "attempts": sub.attempts,
        "charging": sub.charging,
        "charge_sent_at": sub.charge_sent_at,
        "next_retry_at": sub.next_retry_at,
        "charges_sent": sub.charges_sent,
        "due_at": due_at(sub),
        "updated_at": now,
    }


def snapshot(sub: Subscription) -> dict[str, Any]:
    """A JSON-able picture of the state, for the audit log."""
    return {
        "product": sub.product.code,
        "scope": sub.scope,
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


def subscriptions_locked(session: Session, sub_ids: Sequence[str]) -> list[SubscriptionRow]:
    """The subscriptions ``sub_ids`` that exist, locked for update in id order (two
    transactions locking some of the same rows this way never deadlock)."""
    query = (
        select(SubscriptionRow)
        .where(SubscriptionRow.id.in_(sorted(set(sub_ids))))
        .order_by(SubscriptionRow.id)
        .with_for_update()
    )
    return list(session.scalars(query))


def subscription_for_service(
    session: Session, installation_id: str, service: str, *, lock: bool = False, scope: str = ""
) -> SubscriptionRow | None:
    query = select(SubscriptionRow).where(
        SubscriptionRow.installation_id == installation_id,
        SubscriptionRow.service == service,
        SubscriptionRow.scope == scope,
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def live_scoped(session: Session, installation_id: str, service: str, *, prefix: str) -> int:
    """How many subscriptions of ``service`` with a scope starting ``prefix`` (one per user,
    one per device) the installation holds that have not expired."""
    query = (
        select(func.count())
        .select_from(SubscriptionRow)
        .where(*_live(installation_id, service, prefix=prefix))
    )
    return int(session.scalar(query) or 0)


def live_scopes(session: Session, installation_id: str, service: str, *, prefix: str) -> set[str]:
    """The scopes starting ``prefix`` of the installation's subscriptions of ``service``
    that have not expired (at most one subscription per scope)."""
    query = select(SubscriptionRow.scope).where(*_live(installation_id, service, prefix=prefix))
    return set(session.scalars(query).all())


def _live(installation_id: str, service: str, *, prefix: str) -> tuple[Any, ...]:
    """The conditions of the installation's subscriptions of ``service`` not expired whose
    scope starts ``prefix``."""
    return (
        SubscriptionRow.installation_id == installation_id,
        SubscriptionRow.service == service,
        SubscriptionRow.scope.startswith(prefix, autoescape=True),
        SubscriptionRow.status != Status.EXPIRED,
    )


def subscriptions_of(session: Session, installation_id: str) -> Sequence[SubscriptionRow]:
    query = (
        select(SubscriptionRow)
        .where(SubscriptionRow.installation_id == installation_id)
        .order_by(SubscriptionRow.service, SubscriptionRow.scope)
    )
    return session.scalars(query).all()


def due_query(*, now: int, limit: int) -> Select[tuple[SubscriptionRow]]:
    """Up to ``limit`` rows with work due, oldest due first, locked; rows another worker
    holds are skipped (PostgreSQL). The sweep runs it over the table's columns
    (``with_only_columns``) to get plain rows.

    SQLite ignores ``SKIP LOCKED``: its ``BEGIN IMMEDIATE`` already lets one writer in.
    """
    return (
        select(SubscriptionRow)
        .where(SubscriptionRow.due_at.is_not(None), SubscriptionRow.due_at <= now)
        .order_by(SubscriptionRow.due_at, SubscriptionRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def due_subscriptions(session: Session, *, now: int, limit: int) -> Sequence[SubscriptionRow]:
    """:func:`due_query` as ORM rows."""
    return session.scalars(due_query(now=now, limit=limit)).all()


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
    line_id: int | None = None,
    charge_key: str | None = None,
) -> None:
    """Remember what an order (line) pays for (default: the order's first line); a second
    link of the same order and subscription is ignored. A ``charge_key`` already on another
    order raises IntegrityError."""
    found = session.scalars(
        select(SubscriptionOrderRow).where(
            SubscriptionOrderRow.order_id == order_id,
            SubscriptionOrderRow.subscription_id == subscription_id,
        )
    ).first()
    if found is not None:
        return
    if line_id is None:  # an order of one subscription: its (first) line
        line_id = session.scalar(
            select(func.min(OrderLineRow.id)).where(OrderLineRow.order_id == order_id)
        )
    session.add(
        SubscriptionOrderRow(
            order_id=order_id,
            line_id=line_id,
            subscription_id=subscription_id,
            kind=kind,
            ends_at=ends_at,
            attempt=attempt,
            months=months,
            charge_key=charge_key,
            created_at=now,
        )
    )
    session.flush()


def order_links(
    session: Session, order_id: int, *, lock: bool = False
) -> Sequence[SubscriptionOrderRow]:
    """Every link of an order, in line order (locked for update when ``lock``)."""
    query = select(SubscriptionOrderRow).where(SubscriptionOrderRow.order_id == order_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query.order_by(SubscriptionOrderRow.id)).all()


def order_link(
    session: Session, order_id: int, *, lock: bool = False
) -> SubscriptionOrderRow | None:
    """The first link of an order (a purchase's or a single renewal's only one)."""
    links = order_links(session, order_id, lock=lock)
    return links[0] if links else None


def line_link(
    session: Session, order_id: int, line_id: int, *, lock: bool = False
) -> SubscriptionOrderRow | None:
    """The link of one order line, if the line pays for a subscription."""
    query = select(SubscriptionOrderRow).where(
        SubscriptionOrderRow.order_id == order_id, SubscriptionOrderRow.line_id == line_id
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def links_of(session: Session, subscription_id: str) -> Sequence[SubscriptionOrderRow]:
    query = select(SubscriptionOrderRow).where(
        SubscriptionOrderRow.subscription_id == subscription_id
    )
    return session.scalars(query.order_by(SubscriptionOrderRow.order_id)).all()


def due_of(row: Any, sub: Subscription, charge: Charge) -> Due:
    """A renewal charge of the subscription of ``row`` (state ``sub``) with what its order
    line needs."""
    return Due(
        sub_id=row.id,
        installation_id=row.installation_id,
        product_code=row.product_code,
        description=f"{sub.product.name}, renewal",
        pay_with=row.pay_with,
        card_token=row.card_token,
        charge=charge,
    )


def hold_month(session: Session, *, buyer: int, end: int) -> None:
    """Lock the purchaser's subscriptions ending at ``end`` (one purchaser-month) until the
    transaction ends; waits for a sweep that holds some of them to commit.

    PostgreSQL: ``FOR NO KEY UPDATE``, in id order (two holders never deadlock; an order
    link's foreign key check, ``KEY SHARE``, is not blocked). SQLite ignores it: its
    ``BEGIN IMMEDIATE`` lets one writer in at a time.
    """
    session.execute(
        select(SubscriptionRow.id)
        .where(SubscriptionRow.purchaser_id == buyer, SubscriptionRow.ends_at == end)
        .order_by(SubscriptionRow.id)
        .with_for_update(key_share=True)
    ).all()


def unplaced_charges(session: Session, *, buyer: int, end: int) -> list[Due]:
    """The purchaser's renewal charges for the month of ``end`` that a tick sent (whoever
    ticked them) and no order holds yet: what that month's renewal order is to charge."""
    query = select(SubscriptionRow).where(
        SubscriptionRow.purchaser_id == buyer,
        SubscriptionRow.ends_at == end,
        SubscriptionRow.charging.is_not(None),
    )
    charges = []
    for row in session.scalars(query.order_by(SubscriptionRow.id)):
        sub = load(row)
        charge = charge_in_flight(sub)
        assert charge is not None
        charges.append(due_of(row, sub, charge))
    placed = orders_of_charge_keys(session, [d.charge.idempotency_key for d in charges])
    return [d for d in charges if d.charge.idempotency_key not in placed]


def orders_of_charge_keys(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """Charge key -> the order that already holds that renewal charge."""
    found: dict[str, int] = {}
    for first in range(0, len(keys), IN_CHUNK):
        query = select(SubscriptionOrderRow.charge_key, SubscriptionOrderRow.order_id).where(
            SubscriptionOrderRow.charge_key.in_(list(keys[first : first + IN_CHUNK]))
        )
        found.update((key, order) for key, order in session.execute(query) if key is not None)
    return found


def abandoned_checkouts(session: Session, *, placed_before: int, limit: int = 100) -> list[int]:
    """Order ids of purchases still unsettled that were placed before ``placed_before``."""
    query = (
        select(SubscriptionOrderRow.order_id)
        .distinct()
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
        .distinct()
        .where(SubscriptionOrderRow.outcome == Outcome.REFUND)
        .order_by(SubscriptionOrderRow.order_id)
        .limit(limit)
    )
    return list(session.scalars(query))


def ending_between(
    session: Session,
    *,
    start: int,
    end: int,
    within: Select[Any] | None,
    limit: int,
    offset: int,
) -> tuple[list[tuple[SubscriptionRow, str]], int]:
    """Active subscriptions ending in ``[start, end)``, soonest first, with their
    installation's name; and how many there are. ``within``: installation ids to keep."""
    conditions = [
        SubscriptionRow.status == Status.ACTIVE,
        SubscriptionRow.ends_at >= start,
        SubscriptionRow.ends_at < end,
    ]
    if within is not None:
        conditions.append(SubscriptionRow.installation_id.in_(within))
    query = (
        select(SubscriptionRow, InstallationRow.name)
        .join(InstallationRow, InstallationRow.id == SubscriptionRow.installation_id)
        .where(*conditions)
        .order_by(SubscriptionRow.ends_at, SubscriptionRow.id)
        .limit(limit)
        .offset(offset)
    )
    total = select(func.count()).select_from(SubscriptionRow).where(*conditions)
    rows = [(row, name) for row, name in session.execute(query).all()]
    return rows, int(session.scalar(total) or 0)


# plan changes ------------------------------------------------------------------
def add_plan_change(
    session: Session, quote: PlanChangeQuote, *, order_id: int | None, status: str, now: int
) -> PlanChangeRow:
    row = PlanChangeRow(
        subscription_id=quote.subscription_id,
        from_code=quote.from_product.code,
        to_code=quote.to_product.code,
        days_left=quote.days_left,
        difference_cents=quote.difference_cents,
        ends_at=quote.ends_at,
        order_id=order_id,
        status=status,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def plan_change_waiting(session: Session, subscription_id: str) -> PlanChangeRow | None:
    """The subscription's upgrade still awaiting its payment, if any."""
    query = select(PlanChangeRow).where(
        PlanChangeRow.subscription_id == subscription_id, PlanChangeRow.status == "pending"
    )
    return session.scalars(query.limit(1)).first()


def downgrades_refunded(session: Session, order_id: int, line_id: int) -> int:
    """Cents of one order line the subscription's downgrades refunded from its order."""
    link = line_link(session, order_id, line_id)
    if link is None:
        return 0
    query = select(func.coalesce(func.sum(PlanChangeRow.difference_cents), 0)).where(
        PlanChangeRow.order_id == order_id,
        PlanChangeRow.subscription_id == link.subscription_id,
        PlanChangeRow.difference_cents < 0,
    )
    return -int(session.scalar(query) or 0)


def plan_changes_of(session: Session, subscription_id: str) -> Sequence[PlanChangeRow]:
    query = select(PlanChangeRow).where(PlanChangeRow.subscription_id == subscription_id)
    return session.scalars(query.order_by(PlanChangeRow.id)).all()


def set_plan_change_status(session: Session, order_id: int, status: str, *, now: int) -> None:
    """Record what became of the upgrade an order pays for (no-op for other orders)."""
    query = select(PlanChangeRow).where(
        PlanChangeRow.order_id == order_id, PlanChangeRow.difference_cents > 0
    )
    for row in session.scalars(query):
        row.status, row.updated_at = status, now
    session.flush()


def plan_change_event(session: Session, order_id: int, *, reversed_: bool) -> Event:
    """The lifecycle event of an upgrade order's payment (or of its reversal)."""
    query = select(PlanChangeRow).where(
        PlanChangeRow.order_id == order_id, PlanChangeRow.difference_cents > 0
    )
    row = session.scalars(query).one()
    if reversed_:
        return PlanChangeReversed(
            back_to=product(row.from_code), bought=product(row.to_code), ref=str(order_id)
        )
    return ChangePlan(
        to=product(row.to_code), end=row.ends_at, ref=str(order_id), cents=row.difference_cents
    )
