"""Support tickets: the service around the pure rules of :mod:`cloud.tickets.rules`.

Each operation is one transaction: load the ticket row (locked), apply the
pure rule with ``now``, store the result. Who is the customer follows the
role: owners and partners write as the customer, staff as support.
RMA approval reads the ticket, whether the device is attached to it and the
device's self-test commands, and asks :func:`cloud.tickets.rules.decide_rma`.
:class:`cloud.tickets.jobs.TicketJob` auto-closes tickets left in suggest-close for 7
days and flags SLA breaches. Reads and the job's UPDATEs are :mod:`cloud.tickets.queries`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES
from cloud.database import Store
from cloud.devices.access import (
    ensure_device_access,
    ensure_installation_access,
    visible_installation_ids,
)
from cloud.errors import N_, Forbidden, NotFound
from cloud.tickets import queries
from cloud.tickets.rules import (
    CUSTOMER_MOVES,
    Category,
    Owner,
    RmaDecision,
    SelfTestOutcome,
    Stage,
    TicketState,
    check_rma,
    decide_rma,
    move,
    on_message,
    open_ticket,
    sla_breached,
)
from cloud.tickets.tables import (
    RmaApprovalRow,
    TicketCcRow,
    TicketDeviceRow,
    TicketMessageRow,
    TicketRow,
)
from common.clock import Clock

__all__ = [
    "Board",
    "DeviceCheck",
    "TicketService",
    "TicketSummary",
    "TicketView",
    "UnknownTicket",
]

_log = logging.getLogger(__name__)


class UnknownTicket(NotFound):
    """No ticket with this id (or not one the principal may see)."""


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    subject: str
    category: str
    stage: str
    next_action: str
    installation_id: str | None
    opened_by: str
    opened_at: int
    due_at: int
    suggest_close_at: int | None
    closed_at: int | None
    sla_breached: bool
    devices: list[str]
    cc: list[str]
    messages: list[dict[str, Any]]
    rma: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TicketSummary:
    """A ticket as a board card: what it is about, where it is, and its SLA clock."""

    id: int
    subject: str
    category: str
    stage: str
    next_action: str
    installation_id: str | None
    opened_at: int
    due_at: int
    resolved_at: int | None  # suggest-close or close: the SLA clock stops
    sla_breached: bool


@dataclass(frozen=True, slots=True)
class Board:
    """Tickets by stage (most urgent first; closed: newest first), with every stage's count."""

    stages: dict[str, list[TicketSummary]]
    counts: dict[str, int]
    breached: int  # open tickets (first or second line) past their SLA


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """A device attached to a ticket: its self-tests since the ticket opened, and the RMA rule."""

    device_id: str
    self_tests: list[SelfTestOutcome]  # newest first
    rma: RmaDecision
    approved_at: int | None


def _summary(row: TicketRow, *, now: int) -> TicketSummary:
    state = _state(row)
    return TicketSummary(
        id=row.id,
        subject=row.subject,
        category=state.category.value,
        stage=state.stage.value,
        next_action=state.next_action.value,
        installation_id=row.installation_id,
        opened_at=row.opened_at,
        due_at=row.due_at,
        resolved_at=state.suggest_close_at or state.closed_at,
        sla_breached=row.sla_breached_at is not None or sla_breached(state, now=now),
    )


def _is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def _label(principal: Principal) -> str:
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"key:{principal.key_id}"


def _state(row: TicketRow) -> TicketState:
    return TicketState(
        category=Category(row.category),
        stage=Stage(row.stage),
        next_action=Owner(row.next_action),
        opened_at=row.opened_at,
        due_at=row.due_at,
        suggest_close_at=row.suggest_close_at,
        closed_at=row.closed_at,
    )


def _apply(row: TicketRow, state: TicketState, *, now: int) -> None:
    row.stage = state.stage
    row.next_action = state.next_action
    row.suggest_close_at = state.suggest_close_at
    row.closed_at = state.closed_at
    row.updated_at = now
    if row.sla_breached_at is None and sla_breached(state, now=now):
        row.sla_breached_at = now


class TicketService:
    def __init__(self, store: Store, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    # reading ---------------------------------------------------------------
    def _load(
        self, session: Session, principal: Principal, ticket_id: int, *, lock: bool = False
    ) -> TicketRow:
        row = session.get(TicketRow, ticket_id, with_for_update=lock)
        missing = UnknownTicket(f"no ticket {ticket_id}")
        if row is None:
            raise missing
        if not _is_staff(principal):
            if row.installation_id is None:
                raise missing
            try:
                ensure_installation_access(session, principal, row.installation_id, write=False)
            except NotFound:
                raise missing from None
        return row

    def _view(self, session: Session, row: TicketRow, *, now: int) -> TicketView:
        tid = row.id
        messages = queries.messages(session, tid)
        rma = queries.approvals(session, tid)
        return TicketView(
            id=tid,
            subject=row.subject,
            category=Category(row.category).value,
            stage=Stage(row.stage).value,
            next_action=Owner(row.next_action).value,
            installation_id=row.installation_id,
            opened_by=row.opened_by,
            opened_at=row.opened_at,
            due_at=row.due_at,
            suggest_close_at=row.suggest_close_at,
            closed_at=row.closed_at,
            sla_breached=row.sla_breached_at is not None or sla_breached(_state(row), now=now),
            devices=queries.attached_devices(session, tid),
            cc=queries.cc_addresses(session, tid),
            messages=[
                {
                    "author": m.author,
                    "from_customer": m.from_customer,
                    "body": m.body,
                    "at": m.created_at,
                }
                for m in messages
            ],
            rma=[
                {
                    "device_id": a.device_id,
                    "command_id": a.command_id,
                    "approved_by": a.approved_by,
                    "approved_at": a.approved_at,
                }
                for a in rma
            ],
        )

    def get(self, principal: Principal, ticket_id: int) -> TicketView:
        now = self._clock()
        with self._store.transaction() as tx:
            return self._view(tx, self._load(tx, principal, ticket_id), now=now)

    def list(
        self, principal: Principal, *, stage: Stage | None, limit: int, offset: int
    ) -> list[TicketView]:
        now = self._clock()
        with self._store.transaction() as tx:
            query = select(TicketRow).order_by(TicketRow.id.desc())
            if stage is not None:
                query = query.where(TicketRow.stage == stage)
            scope = visible_installation_ids(tx, principal)
            if scope is not None:
                query = query.where(TicketRow.installation_id.in_(scope))
            rows = tx.scalars(query.limit(limit).offset(offset)).all()
            return [self._view(tx, row, now=now) for row in rows]

    def board(
        self,
        principal: Principal,
        *,
        category: Category | None = None,
        breached_only: bool = False,
        per_stage: int = 50,
        stage: Stage | None = None,
        offset: int = 0,
    ) -> Board:
        """The tickets the principal may see, by stage, at most ``per_stage`` each.

        With ``stage``, only that column's tickets, from ``offset`` on (a column's pages);
        the counts are every stage's either way.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            where = queries.board_filter(
                scope=visible_installation_ids(tx, principal),
                category=category,
                breached_only=breached_only,
                now=now,
            )
            stages = {
                column.value: [
                    _summary(row, now=now)
                    for row in queries.tickets_in_stage(
                        tx, where, column, limit=per_stage, offset=offset
                    )
                ]
                for column in ([stage] if stage is not None else Stage)
            }
            return Board(
                stages=stages,
                counts=queries.stage_counts(tx, where),
                breached=queries.breached_open(tx, where, now=now),
            )

    def device_checks(self, principal: Principal, ticket_id: int) -> list[DeviceCheck]:
        """Each attached device's self-tests since the ticket opened and the RMA rule's answer.

        The answer is :func:`cloud.tickets.rules.decide_rma`'s, as :meth:`approve_rma`
        would get it now; nothing is written. Raises UnknownTicket.
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id)
            devices = queries.attached_devices(tx, row.id)
            approved = {a.device_id: a.approved_at for a in queries.approvals(tx, row.id)}
            checks = []
            for device_id in devices:
                tests = queries.self_tests(tx, device_id, since=row.opened_at)
                decision = decide_rma(
                    device_id=device_id,
                    ticket=_state(row),
                    device_on_ticket=True,
                    self_tests=tests,
                    now=now,
                )
                checks.append(
                    DeviceCheck(
                        device_id=device_id,
                        self_tests=tests[::-1],
                        rma=decision,
                        approved_at=approved.get(device_id),
                    )
                )
            return checks

    # writing ---------------------------------------------------------------
    def open(
        self,
        principal: Principal,
        *,
        category: Category,
        subject: str,
        body: str,
        installation_id: str | None,
        device_ids: Sequence[str],
        cc: Sequence[str],
    ) -> TicketView:
        """Raises UnknownInstallation/UnknownDevice (out of scope), Forbidden."""
        now = self._clock()
        with self._store.transaction() as tx:
            session = tx
            if installation_id is not None:
                ensure_installation_access(session, principal, installation_id, write=False)
            elif not _is_staff(principal):
                raise Forbidden(N_("name the installation the ticket is about (installation_id)"))
            for device_id in device_ids:
                ensure_device_access(session, principal, device_id, write=False)
            state = open_ticket(category, now=now)
            row = TicketRow(
                subject=subject,
                category=state.category,
                stage=state.stage,
                next_action=state.next_action,
                installation_id=installation_id,
                opened_by=_label(principal),
                opened_at=now,
                due_at=state.due_at,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            session.add(
                TicketMessageRow(
                    ticket_id=row.id,
                    author=_label(principal),
                    from_customer=not _is_staff(principal),
                    body=body,
                    created_at=now,
                )
            )
            session.add_all(TicketDeviceRow(ticket_id=row.id, device_id=d) for d in set(device_ids))
            session.add_all(TicketCcRow(ticket_id=row.id, email=e) for e in set(cc))
            session.flush()
            _log.info("ticket %d opened (%s)", row.id, state.category.value)
            return self._view(session, row, now=now)

    def add_message(self, principal: Principal, ticket_id: int, *, body: str) -> TicketView:
        """Raises UnknownTicket, InvalidTransition (closed)."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id, lock=True)
            customer = not _is_staff(principal)
            _apply(row, on_message(_state(row), from_customer=customer, now=now), now=now)
            tx.add(
                TicketMessageRow(
                    ticket_id=row.id,
                    author=_label(principal),
                    from_customer=customer,
                    body=body,
                    created_at=now,
                )
            )
            tx.flush()
            return self._view(tx, row, now=now)

    def move(self, principal: Principal, ticket_id: int, *, to: Stage) -> TicketView:
        """Raises UnknownTicket, InvalidTransition, Forbidden (customers only close)."""
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id, lock=True)
            if not _is_staff(principal) and to not in CUSTOMER_MOVES:
                raise Forbidden(N_("customers may close their ticket; support moves it otherwise"))
            _apply(row, move(_state(row), to, now=now), now=now)
            tx.flush()
            return self._view(tx, row, now=now)

    def attach(
        self, principal: Principal, ticket_id: int, *, device_ids: Sequence[str], cc: Sequence[str]
    ) -> TicketView:
        now = self._clock()
        with self._store.transaction() as tx:
            session = tx
            row = self._load(session, principal, ticket_id, lock=True)
            for device_id in device_ids:
                ensure_device_access(session, principal, device_id, write=False)
            have = set(queries.attached_devices(session, row.id))
            emails = set(queries.cc_addresses(session, row.id))
            session.add_all(
                TicketDeviceRow(ticket_id=row.id, device_id=d) for d in set(device_ids) - have
            )
            session.add_all(TicketCcRow(ticket_id=row.id, email=e) for e in set(cc) - emails)
            row.updated_at = now
            session.flush()
            return self._view(session, row, now=now)

    def approve_rma(self, principal: Principal, ticket_id: int, *, device_id: str) -> RmaDecision:
        """Approve if the rules of :func:`cloud.tickets.rules.decide_rma` hold.

        Raises:
            UnknownTicket, UnknownDevice: out of scope or missing.
            RmaRefused: closed ticket, device not attached, or no recent self-test
                confirming a hardware fault (``why`` says which case).
        """
        now = self._clock()
        with self._store.transaction() as tx:
            session = tx
            row = self._load(session, principal, ticket_id, lock=True)
            ensure_device_access(session, principal, device_id, write=False)
            attached = session.get(TicketDeviceRow, (row.id, device_id)) is not None
            decision = check_rma(  # RmaRefused: nothing is written
                device_id=device_id,
                ticket=_state(row),
                device_on_ticket=attached,
                self_tests=queries.self_tests(session, device_id, since=row.opened_at),
                now=now,
            )
            assert decision.command_id is not None
            exists = session.scalars(
                select(RmaApprovalRow).where(
                    RmaApprovalRow.ticket_id == row.id, RmaApprovalRow.device_id == device_id
                )
            ).one_or_none()
            if exists is None:
                session.add(
                    RmaApprovalRow(
                        ticket_id=row.id,
                        device_id=device_id,
                        command_id=decision.command_id,
                        approved_by=_label(principal),
                        approved_at=now,
                    )
                )
                row.updated_at = now
            _log.info("RMA of %s approved on ticket %d", device_id, row.id)
            return decision
