"""Queries and writes of orders, transactions and refund retries, inside the caller's session.

Every function takes a SQLAlchemy ``Session`` (``tx``) and commits
nothing. Status changes go through :func:`set_order_status` and
:func:`set_txn_status`, which check the lifecycle and write the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.tables import AuditRow, CompanyRow, UserRow
from cloud.billing.rules import (
    OrderKind,
    OrderLine,
    OrderStatus,
    PayWith,
    TxnType,
    check_transition,
    line_installation,
    order_number,
)
from cloud.billing.tables import OrderLineRow, OrderRow, RefundRetryRow, TransactionRow
from cloud.devices.tables import InstallationRow, IntegratorRow, OwnerRow

__all__ = [
    "ORDER_SORTS",
    "OrderQuery",
    "OrderSummary",
    "Actor",
    "add_retry",
    "audit_line_reversed",
    "add_transaction",
    "charge_of",
    "claim_due_retries",
    "claim_unknown_charges",
    "count_orders",
    "get_order",
    "insert_order",
    "installations_of_account",
    "latest_purchase",
    "lines_of",
    "order_by_key",
    "order_installations",
    "order_summaries",
    "refunded_cents",
    "retries_of",
    "record_resend",
    "resends_of",
    "search_orders",
    "set_hidden",
    "set_order_status",
    "service_codes",
    "set_txn_status",
    "transactions_of",
    "unhandled_paid_orders",
    "visible_among",
]

Actor = Principal | str
_OPEN_REFUND = (OrderStatus.PROCESSING, OrderStatus.SUCCEED, OrderStatus.SYSTEM_PROCESSING)


# what the order history may be sorted by; the id breaks ties, so pages never overlap
ORDER_SORTS = ("date", "number", "amount", "status")


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """Filters of the order history (exact matches; ``number`` ignores case).

    ``service``: a product code on one of the order's lines; ``customer``: any
    part (case ignored) of the buyer's name or e-mail, the buyer's company
    name, or the installation's id or name; ``since <= created_at < until``.
    """

    kind: OrderKind | None = None
    status: OrderStatus | None = None
    number: str | None = None
    installation_id: str | None = None
    limit: int = 25  # the history page's size
    offset: int = 0
    service: str | None = None
    customer: str | None = None
    since: int | None = None
    until: int | None = None
    installation_ids: tuple[str, ...] | None = None  # any of these
    sort: str = "date"  # one of ORDER_SORTS
    descending: bool = True
    # a customer's orders: placed by the user (one of the company's users), or of an
    # installation the user owns (the company integrates), renewals included
    customer_user_id: int | None = None
    customer_company_id: int | None = None
    hidden: bool | None = None  # None: hidden or not; False: not hidden; True: hidden only


@dataclass(frozen=True, slots=True)
class OrderSummary:
    """What a row of the order history shows besides the order itself."""

    customer_name: str | None
    customer_email: str | None
    installation_name: str | None  # of the order's first installation
    # (installation, product code) of its lines, in line order, each pair once: a caller
    # shows only the codes of the installations they may see
    services: tuple[tuple[str, str], ...]
    last_error: str | None  # of the latest failed charge
    # every installation the order is for, in line order: (id, name or None), each once
    installations: tuple[tuple[str, str | None], ...] = ()


def _audit_order(
    session: Session,
    row: OrderRow,
    *,
    actor: Actor,
    action: str,
    before: dict[str, object] | None,
    now: int,
) -> None:
    after = {"status": str(row.status), "number": row.number, "amount_cents": row.amount_cents}
    audit.record(
        session,
        actor=actor,
        action=action,
        object_type="order",
        object_id=str(row.id),
        before=before,
        after=after,
        now=now,
    )


def insert_order(
    session: Session,
    *,
    kind: OrderKind,
    installation_id: str,
    buyer_user_id: int | None,
    pay_with: PayWith,
    lines: Sequence[OrderLine],
    amount_cents: int,
    currency: str,
    idempotency_key: str,
    notify: Sequence[str],
    actor: Actor,
    now: int,
) -> OrderRow:
    """Add an order in ``Processing`` with its lines; flushes (a duplicate key raises here)."""
    row = OrderRow(
        number=f"pending-{secrets.token_hex(12)}",  # the real one needs the id
        kind=kind,
        installation_id=installation_id,
        buyer_user_id=buyer_user_id,
        status=OrderStatus.PROCESSING,
        pay_with=pay_with,
        amount_cents=amount_cents,
        currency=currency,
        idempotency_key=idempotency_key,
        notify=list(notify),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    row.number = order_number(row.id, now=now)
    for line in lines:
        session.add(
            OrderLineRow(
                order_id=row.id,
                product_code=line.product_code,
                description=line.description,
                months=line.months,
                amount_cents=line.amount_cents,
                quantity=line.quantity,
                unit_cents=line.unit,
                installation_id=line.installation_id or installation_id,
            )
        )
    session.flush()
    _audit_order(session, row, actor=actor, action="order.create", before=None, now=now)
    return row


def audit_line_reversed(
    session: Session, row: OrderRow, line: OrderLineRow, *, actor: Actor, now: int
) -> None:
    """Audit one line of an order given back (refunded or credited)."""
    audit.record(
        session,
        actor=actor,
        action="order.line_reversed",
        object_type="order",
        object_id=str(row.id),
        before=None,
        after={
            "number": row.number,
            "line": line.id,
            "installation_id": line.installation_id,
            "amount_cents": line.amount_cents,
        },
        now=now,
    )


def order_by_key(session: Session, idempotency_key: str) -> OrderRow | None:
    query = select(OrderRow).where(OrderRow.idempotency_key == idempotency_key)
    return session.scalars(query).one_or_none()


def get_order(session: Session, order_id: int, *, lock: bool = False) -> OrderRow | None:
    query = select(OrderRow).where(OrderRow.id == order_id)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def lines_of(session: Session, order_id: int) -> Sequence[OrderLineRow]:
    query = select(OrderLineRow).where(OrderLineRow.order_id == order_id)
    return session.scalars(query.order_by(OrderLineRow.id)).all()


def transactions_of(session: Session, order_id: int) -> Sequence[TransactionRow]:
    query = select(TransactionRow).where(TransactionRow.order_id == order_id)
    return session.scalars(query.order_by(TransactionRow.id)).all()


def retries_of(session: Session, txn_ids: Sequence[int]) -> dict[int, RefundRetryRow]:
    if not txn_ids:
        return {}
    query = select(RefundRetryRow).where(RefundRetryRow.transaction_id.in_(txn_ids))
    return {row.transaction_id: row for row in session.scalars(query)}


def charge_of(session: Session, order_id: int) -> TransactionRow | None:
    """The order's successful charge, if any (an order is charged at most once)."""
    query = select(TransactionRow).where(
        TransactionRow.order_id == order_id,
        TransactionRow.type == TxnType.CHARGE,
        TransactionRow.status == OrderStatus.SUCCEED,
    )
    return session.scalars(query).first()


def refunded_cents(session: Session, charge_id: int) -> int:
    """Cents of the charge refunded, being refunded, or queued for a refund retry."""
    queued = select(RefundRetryRow.transaction_id).where(
        RefundRetryRow.exhausted_at.is_(None), RefundRetryRow.resolved_at.is_(None)
    )
    query = select(func.coalesce(func.sum(TransactionRow.amount_cents), 0)).where(
        TransactionRow.parent_id == charge_id,
        TransactionRow.type == TxnType.REFUND,
        or_(TransactionRow.status.in_(_OPEN_REFUND), TransactionRow.id.in_(queued)),
    )
    return int(session.scalar(query) or 0)


def add_transaction(
    session: Session,
    *,
    order_id: int,
    type: TxnType,
    amount_cents: int,
    idempotency_key: str,
    provider: str,
    now: int,
    parent_id: int | None = None,
) -> TransactionRow:
    """Add a transaction in ``Processing``; flushes (a duplicate key raises here)."""
    row = TransactionRow(
        order_id=order_id,
        parent_id=parent_id,
        type=type,
        status=OrderStatus.PROCESSING,
        provider=provider,
        idempotency_key=idempotency_key,
        settled=False,
        amount_cents=amount_cents,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def set_order_status(
    session: Session, row: OrderRow, status: OrderStatus, *, actor: Actor, now: int
) -> None:
    """Move an order along its lifecycle and audit it.

    Raises:
        OrderStateConflict: a transition the lifecycle does not have.
    """
    if row.status == status:
        return
    check_transition(row.status, status)
    before: dict[str, object] = {"status": str(row.status)}
    row.status = status
    row.updated_at = now
    session.flush()
    _audit_order(session, row, actor=actor, action="order.status", before=before, now=now)


def set_hidden(session: Session, row: OrderRow, *, hidden: bool, actor: Actor, now: int) -> None:
    """Hide the order from its customer's history (or show it again), audited; a no-op when
    it is so already."""
    if (row.hidden_at is not None) == hidden:
        return
    before: dict[str, object] = {"hidden_at": row.hidden_at}
    row.hidden_at = now if hidden else None
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="order.hide" if hidden else "order.unhide",
        object_type="order",
        object_id=str(row.id),
        before=before,
        after={"hidden_at": row.hidden_at, "number": row.number},
        now=now,
    )


def resends_of(session: Session, order_id: int, *, mail: str) -> int:
    """How many times the order's ``mail`` (invoice, refund) was resent (from the audit log)."""
    query = select(AuditRow.after).where(
        AuditRow.object_type == "order",
        AuditRow.object_id == str(order_id),
        AuditRow.action == "order.resend",
    )
    return sum(1 for after in session.scalars(query) if (after or {}).get("mail") == mail)


def record_resend(
    session: Session, row: OrderRow, *, mail: str, count: int, actor: Actor, now: int
) -> None:
    """Audit that the order's ``mail`` was queued again (the ``count``-th time)."""
    audit.record(
        session,
        actor=actor,
        action="order.resend",
        object_type="order",
        object_id=str(row.id),
        before=None,
        after={"mail": mail, "resend": count, "to": list(row.notify), "number": row.number},
        now=now,
    )


def set_txn_status(
    session: Session,
    row: TransactionRow,
    status: OrderStatus,
    *,
    actor: Actor,
    now: int,
    error: str | None = None,
    charge_id: str | None = None,
) -> None:
    """Record what the provider answered for a transaction, and audit it on its order."""
    before: dict[str, object] = {"status": str(row.status)}
    row.status = status
    row.updated_at = now
    if error is not None:
        row.error = error[:1000]
    if charge_id:
        row.provider_charge_id = charge_id
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"transaction.{row.type}",
        object_type="order",
        object_id=str(row.order_id),
        before=before,
        after={"transaction": row.id, "status": str(status), "amount_cents": row.amount_cents},
        now=now,
    )


def add_retry(session: Session, *, txn_id: int, next_attempt_at: int, error: str) -> None:
    session.add(
        RefundRetryRow(
            transaction_id=txn_id, attempts=0, next_attempt_at=next_attempt_at, last_error=error
        )
    )
    session.flush()


def claim_due_retries(
    session: Session, *, now: int, lease_s: int, limit: int = 100
) -> list[tuple[RefundRetryRow, TransactionRow]]:
    """Refund retries due at ``now``, claimed for ``lease_s`` so that no other worker takes them.

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers anyway.
    """
    query = (
        select(RefundRetryRow)
        .where(
            RefundRetryRow.next_attempt_at <= now,
            RefundRetryRow.exhausted_at.is_(None),
            RefundRetryRow.resolved_at.is_(None),
        )
        .order_by(RefundRetryRow.next_attempt_at, RefundRetryRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = []
    for retry in session.scalars(query).all():
        retry.next_attempt_at = now + lease_s
        txn = session.get(TransactionRow, retry.transaction_id)
        if txn is not None:
            claimed.append((retry, txn))
    session.flush()
    return claimed


def _touches(ids: Select[Any] | Sequence[str]) -> ColumnElement[bool]:
    """The order is for one of ``ids``: filed under it, or any of its lines is for it.

    An order may span several installations (a checkout, a consolidated renewal): it is
    filed under its first line's, but it belongs to each of them.
    """
    among = ids.scalar_subquery() if isinstance(ids, Select) else list(ids)
    lines = select(OrderLineRow.order_id).where(OrderLineRow.installation_id.in_(among))
    return OrderRow.installation_id.in_(among) | OrderRow.id.in_(lines)


def _line_place() -> ColumnElement[str]:
    """The installation an order line is for: its own, else (older lines) the order's."""
    return func.coalesce(OrderLineRow.installation_id, OrderRow.installation_id)


def _line_services(
    session: Session, rows: Sequence[OrderRow]
) -> dict[int, tuple[tuple[str, str], ...]]:
    """(installation, product code) of each order's lines (by order id), in line order, each
    pair once; a line's installation is :func:`~cloud.billing.rules.line_installation`."""
    out: dict[int, list[tuple[str, str]]] = {row.id: [] for row in rows}
    filed = {row.id: row.installation_id for row in rows}
    if not out:
        return {}
    query = (
        select(OrderLineRow.order_id, OrderLineRow.installation_id, OrderLineRow.product_code)
        .where(OrderLineRow.order_id.in_(sorted(out)))
        .order_by(OrderLineRow.order_id, OrderLineRow.id)
    )
    for order_id, place, code in session.execute(query):
        pair = (line_installation(place, filed[order_id]), code)
        if pair not in out[order_id]:
            out[order_id].append(pair)
    return {order_id: tuple(pairs) for order_id, pairs in out.items()}


def _spans(
    rows: Sequence[OrderRow], services: dict[int, tuple[tuple[str, str], ...]]
) -> dict[int, tuple[str, ...]]:
    """Every installation each order is for: the one it is filed under, then its lines'."""
    return {
        row.id: tuple(dict.fromkeys([row.installation_id, *(p for p, _ in services[row.id])]))
        for row in rows
    }


def order_installations(session: Session, rows: Sequence[OrderRow]) -> dict[int, tuple[str, ...]]:
    """Every installation each order is for (by order id): the one it is filed under, then
    its lines' in line order, each once.

    Lines older than line installations (NULL) count as the order's own installation.
    """
    return _spans(rows, _line_services(session, rows))


def visible_among(
    session: Session, ids: Sequence[str], *, visible: Select[tuple[str]] | None
) -> set[str]:
    """Which of ``ids`` are within ``visible`` (None: all of them)."""
    if visible is None or not ids:
        return set(ids)
    query = select(InstallationRow.id).where(
        InstallationRow.id.in_(sorted(set(ids))),
        InstallationRow.id.in_(visible.scalar_subquery()),
    )
    return set(session.scalars(query))


def _filtered(query: OrderQuery, visible: Select[tuple[str]] | None) -> Select[tuple[OrderRow]]:
    stmt = select(OrderRow)
    if query.kind is not None:
        stmt = stmt.where(OrderRow.kind == query.kind)
    if query.status is not None:
        stmt = stmt.where(OrderRow.status == query.status)
    if query.number is not None:
        stmt = stmt.where(OrderRow.number == query.number.strip().upper())
    if query.installation_id is not None:
        stmt = stmt.where(_touches((query.installation_id,)))
    if query.installation_ids is not None:
        stmt = stmt.where(_touches(query.installation_ids))
    if query.service is not None:
        # a line of the service for an installation within ``visible``: not one hidden from them
        lines = select(OrderLineRow.id).where(
            OrderLineRow.order_id == OrderRow.id, OrderLineRow.product_code == query.service
        )
        if visible is not None:
            lines = lines.where(_line_place().in_(visible.scalar_subquery()))
        stmt = stmt.where(lines.exists())
    if query.customer:
        text = query.customer.strip().lower()
        buyers = (
            select(UserRow.id)
            .outerjoin(CompanyRow, UserRow.company_id == CompanyRow.id)
            .where(
                func.lower(UserRow.email).contains(text, autoescape=True)
                | func.lower(UserRow.name).contains(text, autoescape=True)
                | func.lower(CompanyRow.name).contains(text, autoescape=True)
            )
        )
        places = select(InstallationRow.id).where(
            func.lower(InstallationRow.id).contains(text, autoescape=True)
            | func.lower(InstallationRow.name).contains(text, autoescape=True)
        )
        stmt = stmt.where(OrderRow.buyer_user_id.in_(buyers) | _touches(places))
    if query.customer_user_id is not None:
        owned = select(OwnerRow.installation_id).where(OwnerRow.user_id == query.customer_user_id)
        stmt = stmt.where((OrderRow.buyer_user_id == query.customer_user_id) | _touches(owned))
    if query.customer_company_id is not None:
        staff = select(UserRow.id).where(UserRow.company_id == query.customer_company_id)
        integrated = select(IntegratorRow.installation_id).where(
            IntegratorRow.company_id == query.customer_company_id
        )
        stmt = stmt.where(OrderRow.buyer_user_id.in_(staff) | _touches(integrated))
    if query.hidden is not None:
        hidden = OrderRow.hidden_at.is_not(None)
        stmt = stmt.where(hidden if query.hidden else ~hidden)
    if query.since is not None:
        stmt = stmt.where(OrderRow.created_at >= query.since)
    if query.until is not None:
        stmt = stmt.where(OrderRow.created_at < query.until)
    if visible is not None:
        stmt = stmt.where(_touches(visible))
    return stmt


_SORT_COLUMNS = {
    "date": (OrderRow.created_at,),
    "number": (),
    "amount": (OrderRow.amount_cents,),
    "status": (OrderRow.status,),
}


def search_orders(
    session: Session, query: OrderQuery, *, visible: Select[tuple[str]] | None
) -> Sequence[OrderRow]:
    """The order history, newest first (or as ``query.sort``), filtered, within ``visible``.

    ``visible`` is :func:`cloud.devices.access.visible_installation_ids` (None: all).

    Raises:
        ValueError: a sort key not in :data:`ORDER_SORTS`.
    """
    if query.sort not in _SORT_COLUMNS:
        raise ValueError(f"sort by one of {', '.join(ORDER_SORTS)}, not {query.sort!r}")
    columns = (*_SORT_COLUMNS[query.sort], OrderRow.id)
    order = [c.desc() if query.descending else c.asc() for c in columns]
    stmt = _filtered(query, visible).order_by(*order).limit(query.limit).offset(query.offset)
    return session.scalars(stmt).all()


def count_orders(session: Session, query: OrderQuery, *, visible: Select[tuple[str]] | None) -> int:
    """How many orders :func:`search_orders` would find without its limit and offset."""
    found = _filtered(query, visible).with_only_columns(OrderRow.id).subquery()
    return int(session.scalar(select(func.count()).select_from(found)) or 0)


def order_summaries(session: Session, rows: Sequence[OrderRow]) -> dict[int, OrderSummary]:
    """Buyer, installation name, product codes and last charge error of each order (by id)."""
    ids = [r.id for r in rows]
    if not ids:
        return {}
    buyer_ids = {r.buyer_user_id for r in rows if r.buyer_user_id is not None}
    buyers = {
        u.id: (u.name, u.email)
        for u in session.execute(
            select(UserRow.id, UserRow.name, UserRow.email).where(UserRow.id.in_(sorted(buyer_ids)))
        )
    }
    services = _line_services(session, rows)
    spans = _spans(rows, services)
    every = {place for span in spans.values() for place in span}
    places = {
        place_id: name
        for place_id, name in session.execute(
            select(InstallationRow.id, InstallationRow.name).where(
                InstallationRow.id.in_(sorted(every))
            )
        )
    }
    errors: dict[int, str | None] = {}
    for order_id, error in session.execute(
        select(TransactionRow.order_id, TransactionRow.error)
        .where(
            TransactionRow.order_id.in_(ids),
            TransactionRow.type == TxnType.CHARGE,
            TransactionRow.status == OrderStatus.FAILED,
        )
        .order_by(TransactionRow.id)
    ):
        errors[order_id] = error  # the latest wins
    out = {}
    for row in rows:
        name, email = buyers.get(row.buyer_user_id or 0, (None, None))
        out[row.id] = OrderSummary(
            customer_name=name,
            customer_email=email,
            installation_name=places.get(row.installation_id),
            installations=tuple((place, places.get(place)) for place in spans[row.id]),
            services=services[row.id],
            last_error=errors.get(row.id),
        )
    return out


def installations_of_account(
    session: Session,
    *,
    user_id: int | None,
    company_id: int | None,
    visible: Select[tuple[str]] | None,
    installation_id: str | None = None,
    search: str | None = None,
    limit: int = 100,
) -> Sequence[InstallationRow]:
    """The installations a user owns or a company integrates, the one ``installation_id``,
    and those whose id is ``search`` or whose name holds it (case ignored), by name.

    Only those within ``visible`` (None: all).
    """
    ids: list[Select[tuple[str]]] = []
    if installation_id is not None:
        ids.append(select(InstallationRow.id).where(InstallationRow.id == installation_id))
    if search and search.strip():
        text = search.strip()
        ids.append(
            select(InstallationRow.id).where(
                (InstallationRow.id == text)
                | func.lower(InstallationRow.name).contains(text.lower(), autoescape=True)
            )
        )
    if user_id is not None:
        ids.append(select(OwnerRow.installation_id).where(OwnerRow.user_id == user_id))
    if company_id is not None:
        ids.append(
            select(IntegratorRow.installation_id).where(IntegratorRow.company_id == company_id)
        )
    if not ids:
        return []
    stmt = select(InstallationRow).where(or_(*(InstallationRow.id.in_(q) for q in ids)))
    if visible is not None:
        stmt = stmt.where(InstallationRow.id.in_(visible.scalar_subquery()))
    stmt = stmt.order_by(func.lower(InstallationRow.name), InstallationRow.id).limit(limit)
    return session.scalars(stmt).all()


def latest_purchase(session: Session, installation_id: str) -> OrderRow | None:
    """The installation's latest order that a person placed (renewals by the system aside)."""
    query = (
        select(OrderRow)
        .where(OrderRow.installation_id == installation_id, OrderRow.buyer_user_id.is_not(None))
        .order_by(OrderRow.created_at.desc(), OrderRow.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def service_codes(session: Session, *, visible: Select[tuple[str]] | None) -> list[str]:
    """The product codes on the order lines for installations within ``visible`` (the
    history's service filter)."""
    stmt = select(OrderLineRow.product_code).distinct()
    if visible is not None:
        stmt = stmt.join(OrderRow, OrderRow.id == OrderLineRow.order_id).where(
            _line_place().in_(visible.scalar_subquery())
        )
    return sorted(session.scalars(stmt))


def claim_unknown_charges(
    session: Session, *, stale_before: int, actor: Actor, now: int, limit: int = 100
) -> list[tuple[int, str]]:
    """Claim charges of unknown outcome as ``System Processing``; (transaction id, key) each.

    ``Time out`` charges, and ``Processing`` / ``System Processing`` ones not
    changed since ``stale_before``; ``FOR UPDATE SKIP LOCKED`` so that two
    workers claim different ones.
    """
    query = (
        select(TransactionRow)
        .where(
            TransactionRow.type == TxnType.CHARGE,
            (TransactionRow.status == OrderStatus.TIME_OUT)
            | (
                TransactionRow.status.in_([OrderStatus.PROCESSING, OrderStatus.SYSTEM_PROCESSING])
                & (TransactionRow.updated_at <= stale_before)
            ),
        )
        .order_by(TransactionRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = []
    for txn in session.scalars(query).all():
        row = get_order(session, txn.order_id, lock=True)
        assert row is not None
        if row.status == OrderStatus.PROCESSING:  # died mid-charge: same as a lost answer
            set_order_status(session, row, OrderStatus.TIME_OUT, actor=actor, now=now)
        set_txn_status(session, txn, OrderStatus.SYSTEM_PROCESSING, actor=actor, now=now)
        set_order_status(session, row, OrderStatus.SYSTEM_PROCESSING, actor=actor, now=now)
        row.paid_handled_at = None
        claimed.append((txn.id, txn.idempotency_key))
    return claimed


def unhandled_paid_orders(session: Session, *, limit: int = 100) -> list[int]:
    """Orders that succeeded but whose on-paid callbacks have not all run."""
    query = select(OrderRow.id).where(
        OrderRow.status == OrderStatus.SUCCEED, OrderRow.paid_handled_at.is_(None)
    )
    return list(session.scalars(query.order_by(OrderRow.id).limit(limit)))
