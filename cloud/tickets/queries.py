"""Tickets' reads and set-based writes, inside the caller's session.

The board's filter (:func:`board_filter`) is one list of conditions shared by its counts
and its columns; the job's passes (:func:`close_suggested`, :func:`flag_breaches`) are
conditional UPDATEs, safe in every worker (which tickets to flag is the pure rule's,
:func:`cloud.tickets.rules.breached`, over :func:`breach_candidates`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from cloud.accounts.rules import STAFF_ROLES
from cloud.accounts.tables import UserRow
from cloud.devices.tables import OwnerRow
from cloud.health.tables import CommandRow, CommandStatus
from cloud.tickets.rules import (
    AUTO_CLOSE_AFTER_S,
    LINE_SLA,
    LINES,
    Category,
    Owner,
    SelfTestOutcome,
    Stage,
    Status,
    TicketState,
)
from cloud.tickets.tables import (
    RmaApprovalRow,
    TicketAttachmentRow,
    TicketCcRow,
    TicketDeviceRow,
    TicketMessageRow,
    TicketRow,
    TicketTaskRow,
)

__all__ = [
    "Contacts",
    "approvals",
    "attachments",
    "tasks",
    "ticket_contacts",
    "user_email",
    "attached_devices",
    "board_filter",
    "breach_candidates",
    "breached_open",
    "cc_addresses",
    "close_suggested",
    "flag_breaches",
    "messages",
    "referenced",
    "self_tests",
    "stage_counts",
    "support_users",
    "ticket_state",
    "tickets_in_stage",
]

_OPEN = LINES


def messages(session: Session, ticket_id: int) -> Sequence[TicketMessageRow]:
    query = select(TicketMessageRow).where(TicketMessageRow.ticket_id == ticket_id)
    return session.scalars(query.order_by(TicketMessageRow.id)).all()


def attached_devices(session: Session, ticket_id: int) -> list[str]:
    """The device ids attached to the ticket, sorted."""
    query = select(TicketDeviceRow.device_id).where(TicketDeviceRow.ticket_id == ticket_id)
    return sorted(session.scalars(query))


def cc_addresses(session: Session, ticket_id: int) -> list[str]:
    """The addresses in copy of the ticket, sorted."""
    query = select(TicketCcRow.email).where(TicketCcRow.ticket_id == ticket_id)
    return sorted(session.scalars(query))


def tasks(session: Session, ticket_id: int) -> Sequence[TicketTaskRow]:
    """The ticket's action tasks, by expected date."""
    query = select(TicketTaskRow).where(TicketTaskRow.ticket_id == ticket_id)
    return session.scalars(query.order_by(TicketTaskRow.expected_on, TicketTaskRow.id)).all()


def referenced(session: Session, shas: Collection[str]) -> set[str]:
    """Which of these SHA-256s an attachment row names."""
    named: set[str] = set()
    wanted = sorted(shas)
    for at in range(0, len(wanted), 500):  # bounded IN lists
        chunk = wanted[at : at + 500]
        query = select(TicketAttachmentRow.sha256).where(TicketAttachmentRow.sha256.in_(chunk))
        named.update(session.scalars(query.distinct()))
    return named


def attachments(session: Session, ticket_id: int) -> Sequence[TicketAttachmentRow]:
    query = select(TicketAttachmentRow).where(TicketAttachmentRow.ticket_id == ticket_id)
    return session.scalars(query.order_by(TicketAttachmentRow.id)).all()


@dataclass(frozen=True, slots=True)
class Contacts:
    emails: list[str]
    locale: str | None  # the first person's dashboard language


def _user_id(label: str) -> int | None:
    kind, _, number = label.partition(":")
    return int(number) if kind == "user" and number.isdigit() else None


def user_email(session: Session, user_id: int | None) -> str | None:
    user = None if user_id is None else session.get(UserRow, user_id)
    return None if user is None else user.email


def ticket_contacts(session: Session, row: TicketRow) -> tuple[Contacts, Contacts]:
    """Who hears of a ticket: the customer's side (the opener if a customer, the
    installation's owner, the copies) and support's (the responsible person)."""
    people: list[UserRow] = []
    opener = _user_id(row.opened_by)
    if opener is not None and (user := session.get(UserRow, opener)) is not None:
        if user.role not in STAFF_ROLES:
            people.append(user)
    if row.installation_id is not None:
        owner = session.scalars(
            select(UserRow)
            .join(OwnerRow, OwnerRow.user_id == UserRow.id)
            .where(OwnerRow.installation_id == row.installation_id)
        ).one_or_none()
        if owner is not None:
            people.append(owner)
    active = [p for p in people if p.disabled_at is None]
    customer = Contacts(
        [p.email for p in active] + cc_addresses(session, row.id),
        next((p.locale for p in active if p.locale), None),
    )
    responsible = (
        None if row.responsible_user_id is None else session.get(UserRow, row.responsible_user_id)
    )
    if responsible is None or responsible.disabled_at is not None:
        return customer, Contacts([], None)
    return customer, Contacts([responsible.email], responsible.locale)


def support_users(session: Session) -> Sequence[UserRow]:
    """Active users of support (who may be responsible for a ticket), by name."""
    query = select(UserRow).where(UserRow.role.in_(STAFF_ROLES), UserRow.disabled_at.is_(None))
    return session.scalars(query.order_by(UserRow.name, UserRow.id)).all()


def approvals(session: Session, ticket_id: int) -> Sequence[RmaApprovalRow]:
    query = select(RmaApprovalRow).where(RmaApprovalRow.ticket_id == ticket_id)
    return session.scalars(query).all()


def self_tests(session: Session, device_id: str, *, since: int) -> list[SelfTestOutcome]:
    """The device's answered self-tests sent since ``since``, in the order they were sent."""
    rows = session.scalars(
        select(CommandRow)
        .where(
            CommandRow.device_id == device_id,
            CommandRow.cmd == "self_test",
            CommandRow.status == CommandStatus.ANSWERED,
            CommandRow.created_at >= since,
        )
        .order_by(CommandRow.created_at, CommandRow.answered_at)
    ).all()
    return [SelfTestOutcome(t.id, t.answered_at or 0, bool(t.ok), t.result) for t in rows]


def _breached(now: int) -> Any:
    """Flagged by the job, or an open ticket past its due time that the job has not seen yet."""
    return or_(
        TicketRow.sla_breached_at.is_not(None),
        and_(TicketRow.stage.in_(_OPEN), TicketRow.due_at < now),
    )


def board_filter(
    *, scope: Any | None, category: Category | None, breached_only: bool, now: int
) -> list[Any]:
    """The conditions of a board: the principal's installations (``scope``, None: all),
    a category, only SLA breaches."""
    where: list[Any] = []
    if scope is not None:
        where.append(TicketRow.installation_id.in_(scope))
    if category is not None:
        where.append(TicketRow.category == category)
    if breached_only:
        where.append(_breached(now))
    return where


def stage_counts(session: Session, where: Sequence[Any]) -> dict[str, int]:
    """How many tickets of the board are in each stage (every stage named, 0 included)."""
    counts = {stage.value: 0 for stage in Stage}
    query = select(TicketRow.stage, func.count()).where(*where).group_by(TicketRow.stage)
    for stage, count in session.execute(query):
        counts[Stage(stage).value] = int(count)
    return counts


def breached_open(session: Session, where: Sequence[Any], *, now: int) -> int:
    """How many of the board's open tickets (first or second line) are past their SLA."""
    query = select(func.count()).select_from(TicketRow)
    query = query.where(*where, TicketRow.stage.in_(_OPEN), _breached(now))
    return int(session.scalar(query) or 0)


def tickets_in_stage(
    session: Session, where: Sequence[Any], stage: Stage, *, limit: int, offset: int = 0
) -> list[tuple[TicketRow, UserRow | None]]:
    """One column of the board, each with its responsible person: most urgent first;
    closed ones newest first."""
    order = (
        (TicketRow.closed_at.desc(), TicketRow.id.desc())
        if stage is Stage.CLOSED
        else (TicketRow.due_at, TicketRow.id)
    )
    query = (
        select(TicketRow, UserRow)
        .outerjoin(UserRow, UserRow.id == TicketRow.responsible_user_id)
        .where(*where, TicketRow.stage == stage)
        .order_by(*order)
    )
    return [(t, u) for t, u in session.execute(query.limit(limit).offset(offset))]


def close_suggested(session: Session, *, now: int) -> list[int]:
    """Close every ticket left in suggest-close for :data:`AUTO_CLOSE_AFTER_S`; their ids.

    Select-then-update with the same condition: a ticket another worker closed (or a
    customer reopened) meanwhile is not in the UPDATE's rows, and only those updated
    are returned (``RETURNING``).
    """
    result = session.execute(
        update(TicketRow)
        .where(
            TicketRow.stage == Stage.SUGGEST_CLOSE,
            TicketRow.suggest_close_at <= now - AUTO_CLOSE_AFTER_S,
        )
        .values(
            stage=Stage.CLOSED,
            status=Status.CLOSED,
            next_action=Owner.NOBODY,
            closed_at=now,
            stage_since=now,
            updated_at=now,
        )
        .returning(TicketRow.id)
    )
    return sorted(int(ticket_id) for ticket_id in result.scalars())


def ticket_state(row: TicketRow) -> TicketState:
    """The pure rules' view of a ticket row."""
    return TicketState(
        category=Category(row.category),
        stage=Stage(row.stage),
        next_action=Owner(row.next_action),
        opened_at=row.opened_at,
        due_at=row.due_at,
        suggest_close_at=row.suggest_close_at,
        closed_at=row.closed_at,
        status=Status(row.status or Status.OPEN),
        stage_since=row.stage_since,
        responded_at=row.responded_at,
        plan=row.plan,
        eta=row.eta,
    )


_EARLIEST_TARGET_S = min(min(sla.response_s, sla.resolution_s) for sla in LINE_SLA.values())


def breach_candidates(session: Session, *, now: int) -> Sequence[TicketRow]:
    """Open tickets not yet flagged that may be past an SLA: past their category's due
    time, or on their line (or before an ETA) longer than any line's first target.
    :func:`cloud.tickets.rules.breached` decides; this only spares it the young ones."""
    since = func.coalesce(TicketRow.stage_since, TicketRow.opened_at)
    query = select(TicketRow).where(
        TicketRow.stage.in_(_OPEN),
        TicketRow.sla_breached_at.is_(None),
        or_(
            TicketRow.due_at < now,
            since < now - _EARLIEST_TARGET_S,
            TicketRow.eta < now,
        ),
    )
    return session.scalars(query.order_by(TicketRow.id)).all()


def flag_breaches(session: Session, ticket_ids: Sequence[int], *, now: int) -> int:
    """Stamp ``sla_breached_at`` on these tickets unless flagged already (by another
    worker meanwhile); how many."""
    if not ticket_ids:
        return 0
    result = session.execute(
        update(TicketRow)
        .where(
            TicketRow.id.in_(ticket_ids),
            TicketRow.stage.in_(_OPEN),
            TicketRow.sla_breached_at.is_(None),
        )
        .values(sla_breached_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)
