"""Support tickets: the service around the pure rules of :mod:`cloud.tickets.rules`.

Each operation is one transaction: load the ticket row (locked), apply the
pure rule with ``now``, store the result. Who is the customer follows the
role: owners and partners write as the customer, staff as support.
RMA approval reads the ticket, whether the device is attached to it and the
device's self-test commands, and asks :func:`cloud.tickets.rules.decide_rma`.
Support alone re-categorises, sets the status within a line, assigns the responsible
person and keeps the action tasks; every such change writes an audit row. Messages,
stage and status changes and the proposal to close are mailed through the outbox in the
same transaction (:mod:`cloud.tickets.notices`). Attachments are files of
:class:`cloud.tickets.storage.AttachmentStore`, their metadata rows here.
:class:`cloud.tickets.jobs.TicketJob` auto-closes tickets left in suggest-close for 7
days and flags SLA breaches. Reads and the job's UPDATEs are :mod:`cloud.tickets.queries`.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.accounts import audit
from cloud.accounts.apikeys import Principal
from cloud.accounts.rules import STAFF_ROLES
from cloud.accounts.tables import UserRow
from cloud.database import Store
from cloud.devices.access import (
    ensure_device_access,
    ensure_installation_access,
    visible_installation_ids,
)
from cloud.errors import N_, Forbidden, InvalidTransition, NotFound
from cloud.health.service import HealthService
from cloud.notifications.outbox import enqueue
from cloud.tickets import notices, queries
from cloud.tickets.rules import (
    AUTO_CLOSE_AFTER_S,
    CUSTOMER_MOVES,
    Category,
    Owner,
    RmaDecision,
    SelfTestOutcome,
    Stage,
    Status,
    TaskStatus,
    TaskType,
    TicketState,
    breached,
    check_category,
    check_responsible,
    check_rma,
    decide_rma,
    escalate_third_line,
    line_clock,
    move,
    move_task,
    on_message,
    open_ticket,
    recategorise,
    set_status,
    sla_breached,
)
from cloud.tickets.rules.files import check_count, check_delete
from cloud.tickets.rules.precheck import ReportCheck, report_check
from cloud.tickets.storage import AttachmentStore, Stored
from cloud.tickets.tables import (
    RmaApprovalRow,
    TicketAttachmentRow,
    TicketCcRow,
    TicketDeviceRow,
    TicketMessageRow,
    TicketRow,
    TicketTaskRow,
)
from common.clock import Clock

__all__ = [
    "AttachmentFile",
    "Board",
    "DeviceCheck",
    "TicketService",
    "TicketSummary",
    "TicketView",
    "UnknownAttachment",
    "UnknownTask",
    "UnknownTicket",
    "Upload",
]

Translations = Callable[[str | None], Callable[[str], str]]

_log = logging.getLogger(__name__)


class UnknownTicket(NotFound):
    """No ticket with this id (or not one the principal may see)."""


class UnknownAttachment(NotFound):
    """No attachment with this id on a ticket the principal may see."""


class UnknownTask(NotFound):
    """No action task with this id on the ticket."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A file as it arrives: its bytes to read and the name the client gave it."""

    source: BinaryIO
    name: str


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    """An attachment to stream back: where its bytes are and what to call them."""

    path: Path
    filename: str
    content_type: str
    size: int


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
    status: str = Status.OPEN.value
    responsible: dict[str, Any] | None = None  # {"user_id", "name"} of support
    plan: str | None = None
    eta: int | None = None
    line_sla: dict[str, Any] | None = None  # the current line's response/resolution clock
    questions: dict[str, str] | None = None
    tasks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None


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
    status: str = Status.OPEN.value
    responsible: str | None = None  # the responsible person's name


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


def _summary(row: TicketRow, *, now: int, responsible: UserRow | None = None) -> TicketSummary:
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
        status=state.status.value,
        responsible=None if responsible is None else responsible.name,
    )


def _is_staff(principal: Principal) -> bool:
    return principal.role in STAFF_ROLES


def _label(principal: Principal) -> str:
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"key:{principal.key_id}"


_state = queries.ticket_state


def _apply(row: TicketRow, state: TicketState, *, now: int) -> None:
    row.category = state.category
    row.due_at = state.due_at
    row.stage = state.stage
    row.status = state.status
    row.next_action = state.next_action
    row.suggest_close_at = state.suggest_close_at
    row.closed_at = state.closed_at
    row.stage_since = state.stage_since
    row.responded_at = state.responded_at
    row.plan = state.plan
    row.eta = state.eta
    row.updated_at = now
    if row.sla_breached_at is None and breached(state, now=now):
        row.sla_breached_at = now


def _snapshot(row: TicketRow) -> dict[str, Any]:
    """What the audit log keeps of a ticket before and after a change."""
    return {
        "category": Category(row.category).value,
        "stage": Stage(row.stage).value,
        "status": Status(row.status or Status.OPEN).value,
        "responsible_user_id": row.responsible_user_id,
        "plan": row.plan,
        "eta": row.eta,
    }


def _attachment(file: TicketAttachmentRow) -> dict[str, Any]:
    """What the audit log keeps of an attachment."""
    return {
        "ticket_id": file.ticket_id,
        "message_id": file.message_id,
        "filename": file.filename,
        "content_type": file.content_type,
        "size": file.size,
        "sha256": file.sha256,
        "uploaded_by": file.uploaded_by,
    }


def _task(task: TicketTaskRow) -> dict[str, Any]:
    return {
        "id": task.id,
        "type": TaskType(task.type).value,
        "title": task.title,
        "hours": task.hours,
        "expected_on": task.expected_on.isoformat(),
        "status": TaskStatus(task.status).value,
        "created_by": task.created_by,
        "updated_at": task.updated_at,
    }


class TicketService:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        attachments: AttachmentStore | None = None,
        translations: Translations | None = None,
        public_url: str = "http://127.0.0.1:8000",
        support_email: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._files = attachments
        self._translations = translations or (lambda _lang: lambda text: text)
        self._public_url = public_url.rstrip("/")
        self._support_email = support_email

    # mail ------------------------------------------------------------------
    def _queue(
        self, tx: Session, to: Sequence[str], mail: notices.Mail, *, ticket_id: int, now: int
    ) -> None:
        if not to:
            return
        try:
            enqueue(tx, kind=mail.kind, to=to, subject=mail.subject, body=mail.body, now=now)
        except ValueError as err:  # an address the mail cannot carry: the change stands
            _log.warning("ticket %d: mail %s not queued: %s", ticket_id, mail.kind, err)

    def _sides(
        self, tx: Session, row: TicketRow, *, author: Principal | None
    ) -> tuple[tuple[list[str], str | None], tuple[list[str], str | None]]:
        """The customer's side (opener, owner, copies) and support's (the responsible
        person, else the support address), each with its language, without the author."""
        customer, support = queries.ticket_contacts(tx, row)
        mine = None if author is None else queries.user_email(tx, author.user_id)
        cust = sorted({e for e in customer.emails if e != mine})
        supp = sorted({e for e in support.emails if e != mine})
        if not support.emails and self._support_email and self._support_email != mine:
            supp = [self._support_email]
        return (cust, customer.locale), (supp, support.locale)

    def _link(self, ticket_id: int) -> str:
        return f"{self._public_url}/tickets/{ticket_id}"

    def _mail_message(
        self, tx: Session, row: TicketRow, *, author: Principal, body: str, now: int
    ) -> None:
        (cust, cust_lang), (supp, supp_lang) = self._sides(tx, row, author=author)
        from_support = _is_staff(author)
        for to, lang in ((cust, cust_lang), (supp, supp_lang)):
            mail = notices.message_mail(
                ticket_id=row.id,
                subject=row.subject,
                body=body,
                from_support=from_support,
                link=self._link(row.id),
                _=self._translations(lang),
            )
            self._queue(tx, to, mail, ticket_id=row.id, now=now)

    def _mail_status(
        self, tx: Session, row: TicketRow, *, author: Principal | None, now: int
    ) -> None:
        """To the customer's side; to support's too when support did not make the change."""
        (cust, cust_lang), (supp, supp_lang) = self._sides(tx, row, author=author)
        by_support = author is not None and _is_staff(author)
        groups = [(cust, cust_lang)] + ([] if by_support else [(supp, supp_lang)])
        for to, lang in groups:
            _ = self._translations(lang)
            if Stage(row.stage) is Stage.SUGGEST_CLOSE:
                mail = notices.suggest_close_mail(
                    ticket_id=row.id,
                    subject=row.subject,
                    days=AUTO_CLOSE_AFTER_S // 86_400,
                    link=self._link(row.id),
                    _=_,
                )
            else:
                mail = notices.status_mail(
                    ticket_id=row.id,
                    subject=row.subject,
                    stage=_(notices.STAGE_NAMES[Stage(row.stage).value]),
                    status=_(notices.STATUS_NAMES[Status(row.status).value]),
                    link=self._link(row.id),
                    _=_,
                )
            self._queue(tx, to, mail, ticket_id=row.id, now=now)

    def auto_closed(self, tx: Session, ticket_ids: Sequence[int], now: int) -> None:
        """The job closed these tickets (7 days in suggest-close): audit and tell both sides,
        in the job's transaction."""
        for ticket_id in ticket_ids:
            row = tx.get(TicketRow, ticket_id)
            if row is None:
                continue
            audit.record(
                tx,
                actor="system:tickets",
                action="ticket.auto_close",
                object_type="ticket",
                object_id=str(row.id),
                before={"stage": Stage.SUGGEST_CLOSE.value},
                after=_snapshot(row),
                now=now,
            )
            self._mail_status(tx, row, author=None, now=now)

    def _audit(
        self,
        tx: Session,
        principal: Principal,
        action: str,
        row: TicketRow,
        before: dict[str, Any] | None,
        *,
        now: int,
    ) -> None:
        audit.record(
            tx,
            actor=principal,
            action=action,
            object_type="ticket",
            object_id=str(row.id),
            before=before,
            after=_snapshot(row),
            now=now,
        )

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
        responsible = (
            None
            if row.responsible_user_id is None
            else session.get(UserRow, row.responsible_user_id)
        )
        clock = line_clock(_state(row), now=now)
        files = [
            {
                "id": a.id,
                "message_id": a.message_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "from_customer": a.from_customer,
                "uploaded_by": a.uploaded_by,
                "uploaded_at": a.uploaded_at,
            }
            for a in queries.attachments(session, tid)
        ]
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
                    "id": m.id,
                    "author": m.author,
                    "from_customer": m.from_customer,
                    "body": m.body,
                    "at": m.created_at,
                    "attachments": [a for a in files if a["message_id"] == m.id],
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
            status=Status(row.status or Status.OPEN).value,
            responsible=None
            if responsible is None
            else {"user_id": responsible.id, "name": responsible.name},
            plan=row.plan,
            eta=row.eta,
            line_sla=None
            if clock is None
            else {
                "line": clock.line.value,
                "response_due": clock.response_due,
                "resolution_due": clock.resolution_due,
                "responded": clock.responded,
                "response_breached": clock.response_breached,
                "resolution_breached": clock.resolution_breached,
            },
            questions=row.questions,
            tasks=[_task(t) for t in queries.tasks(session, tid)],
            attachments=files,
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
                    _summary(row, now=now, responsible=responsible)
                    for row, responsible in queries.tickets_in_stage(
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
        questions: dict[str, str] | None = None,
    ) -> TicketView:
        """Raises UnknownInstallation/UnknownDevice (out of scope), Forbidden,
        CategoryRefused (a support-only category chosen by a customer)."""
        now = self._clock()
        check_category(category, staff=_is_staff(principal))
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
                status=state.status,
                stage_since=state.stage_since,
                questions={k: v for k, v in (questions or {}).items() if v} or None,
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
            self._audit(tx, principal, "ticket.open", row, None, now=now)
            self._mail_message(tx, row, author=principal, body=body, now=now)
            _log.info("ticket %d opened (%s)", row.id, state.category.value)
            return self._view(session, row, now=now)

    def add_message(
        self, principal: Principal, ticket_id: int, *, body: str, files: Sequence[Upload] = ()
    ) -> TicketView:
        """A message, with the files it carries (all stored with it, or nothing).

        Raises UnknownTicket, InvalidTransition (closed), and for ``files``
        TooManyAttachments, UnsupportedAttachment (422), AttachmentTooLarge (413).
        """
        stored = self._store_files(principal, ticket_id, files) if files else ()
        try:
            now = self._clock()
            with self._store.transaction() as tx:
                row = self._load(tx, principal, ticket_id, lock=True)
                customer = not _is_staff(principal)
                _apply(row, on_message(_state(row), from_customer=customer, now=now), now=now)
                message = TicketMessageRow(
                    ticket_id=row.id,
                    author=_label(principal),
                    from_customer=customer,
                    body=body,
                    created_at=now,
                )
                tx.add(message)
                tx.flush()
                self._file_rows(tx, principal, row, stored, message_id=message.id, now=now)
                self._mail_message(tx, row, author=principal, body=body, now=now)
                return self._view(tx, row, now=now)
        except BaseException:
            self._discard(stored)
            raise

    def move(
        self,
        principal: Principal,
        ticket_id: int,
        *,
        to: Stage,
        plan: str | None = None,
        eta: int | None = None,
    ) -> TicketView:
        """Move the ticket; the third line needs a ``plan`` and an ``eta``.

        Raises UnknownTicket, InvalidTransition, Forbidden (customers only close),
        InvalidRequest (the third line without a plan or with a past ETA).
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id, lock=True)
            if not _is_staff(principal) and to not in CUSTOMER_MOVES:
                raise Forbidden(N_("customers may close their ticket; support moves it otherwise"))
            before = _snapshot(row)
            if to is Stage.THIRD_LINE:
                state = escalate_third_line(_state(row), plan=plan or "", eta=eta or 0, now=now)
            else:
                state = move(_state(row), to, now=now)
            _apply(row, state, now=now)
            tx.flush()
            self._audit(tx, principal, "ticket.stage", row, before, now=now)
            self._mail_status(tx, row, author=principal, now=now)
            return self._view(tx, row, now=now)

    def set_status(self, principal: Principal, ticket_id: int, *, status: Status) -> TicketView:
        """Support sets the status within the line. Raises UnknownTicket, Forbidden,
        InvalidTransition."""
        return self._support_change(
            principal,
            ticket_id,
            "ticket.status",
            lambda tx, row, now: _apply(row, set_status(_state(row), status), now=now),
            mail=True,
        )

    def recategorise(
        self, principal: Principal, ticket_id: int, *, category: Category
    ) -> TicketView:
        """Support's new category (any, support-only ones too); the SLA follows it.
        Raises UnknownTicket, Forbidden, InvalidTransition (closed)."""
        return self._support_change(
            principal,
            ticket_id,
            "ticket.category",
            lambda tx, row, now: _apply(row, recategorise(_state(row), category), now=now),
        )

    def assign(self, principal: Principal, ticket_id: int, *, user_id: int | None) -> TicketView:
        """Make a support user responsible (None: nobody). Raises UnknownTicket, Forbidden,
        InvalidRequest (not an active support user)."""

        def change(tx: Session, row: TicketRow, now: int) -> None:
            if user_id is not None:
                user = tx.get(UserRow, user_id)
                check_responsible(
                    None if user is None else str(user.role),
                    disabled=user is not None and user.disabled_at is not None,
                    user_id=user_id,
                )
            row.responsible_user_id = user_id
            row.updated_at = now

        return self._support_change(principal, ticket_id, "ticket.assign", change)

    def _support_change(
        self,
        principal: Principal,
        ticket_id: int,
        action: str | None,  # None: the change writes its own audit row
        change: Callable[[Session, TicketRow, int], None],
        *,
        mail: bool = False,
    ) -> TicketView:
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id, lock=True)
            if not _is_staff(principal):
                raise Forbidden(N_("only support changes this on a ticket"))
            before = _snapshot(row)
            change(tx, row, now)
            tx.flush()
            if action is not None:
                self._audit(tx, principal, action, row, before, now=now)
            if mail and before["status"] != _snapshot(row)["status"]:
                self._mail_status(tx, row, author=principal, now=now)
            return self._view(tx, row, now=now)

    # action tasks ---------------------------------------------------------
    def add_task(
        self,
        principal: Principal,
        ticket_id: int,
        *,
        type: TaskType,
        title: str,
        hours: float,
        expected_on: date,
    ) -> TicketView:
        """Support adds an action task (to do). Raises UnknownTicket, Forbidden,
        InvalidTransition (closed)."""

        def change(tx: Session, row: TicketRow, now: int) -> None:
            if Stage(row.stage) is Stage.CLOSED:
                raise InvalidTransition(N_("the ticket is closed; open a new ticket"))
            task = TicketTaskRow(
                ticket_id=row.id,
                type=type,
                title=title,
                hours=hours,
                expected_on=expected_on,
                status=TaskStatus.TODO,
                created_by=_label(principal),
                created_at=now,
                updated_at=now,
            )
            tx.add(task)
            tx.flush()
            row.updated_at = now
            audit.record(
                tx,
                actor=principal,
                action="ticket.task.add",
                object_type="ticket_task",
                object_id=str(task.id),
                before=None,
                after={"ticket_id": row.id, **_task(task)},
                now=now,
            )

        return self._support_change(principal, ticket_id, None, change)

    def update_task(
        self,
        principal: Principal,
        ticket_id: int,
        task_id: int,
        *,
        status: TaskStatus | None = None,
        hours: float | None = None,
        expected_on: date | None = None,
        title: str | None = None,
    ) -> TicketView:
        """Support moves a task or corrects its hours, date or title. Raises UnknownTicket,
        UnknownTask, Forbidden, InvalidTransition (a status the task cannot move to)."""

        def change(tx: Session, row: TicketRow, now: int) -> None:
            task = tx.get(TicketTaskRow, task_id, with_for_update=True)
            if task is None or task.ticket_id != row.id:
                raise UnknownTask(f"no task {task_id} on ticket {row.id}")
            before = _task(task)
            if status is not None:
                task.status = move_task(TaskStatus(task.status), status)
            if hours is not None:
                task.hours = hours
            if expected_on is not None:
                task.expected_on = expected_on
            if title is not None:
                task.title = title
            task.updated_at = now
            row.updated_at = now
            tx.flush()
            audit.record(
                tx,
                actor=principal,
                action="ticket.task.update",
                object_type="ticket_task",
                object_id=str(task.id),
                before=before,
                after=_task(task),
                now=now,
            )

        return self._support_change(principal, ticket_id, None, change)

    def support_users(self, principal: Principal) -> list[tuple[int, str]]:
        """(id, name) of the support users a ticket can be assigned to; none for customers."""
        if not _is_staff(principal):
            return []
        with self._store.transaction() as tx:
            return [(u.id, u.name) for u in queries.support_users(tx)]

    def delete_task(self, principal: Principal, ticket_id: int, task_id: int) -> TicketView:
        """Support removes a task entered by mistake (the audit log keeps what it was).
        Raises UnknownTicket, UnknownTask, Forbidden."""

        def change(tx: Session, row: TicketRow, now: int) -> None:
            task = tx.get(TicketTaskRow, task_id, with_for_update=True)
            if task is None or task.ticket_id != row.id:
                raise UnknownTask(f"no task {task_id} on ticket {row.id}")
            audit.record(
                tx,
                actor=principal,
                action="ticket.task.delete",
                object_type="ticket_task",
                object_id=str(task.id),
                before={"ticket_id": row.id, **_task(task)},
                after=None,
                now=now,
            )
            tx.delete(task)
            row.updated_at = now

        return self._support_change(principal, ticket_id, None, change)

    # check before you report ----------------------------------------------------
    def report_check(
        self, principal: Principal, health: HealthService, *, device_id: str, category: Category
    ) -> ReportCheck:
        """What the device's own health and diagnosis say, in the customer's words
        (:func:`cloud.tickets.rules.precheck.report_check`). Raises UnknownDevice."""
        shown = health.device_health(principal, device_id)
        return report_check(
            category,
            device_id=device_id,
            online=shown.online,
            status_at=shown.status_at,
            last_seen=shown.last_seen,
            verdict=shown.diagnosis.verdict,
            evidence=shown.diagnosis.evidence,
            now=self._clock(),
        )

    # attachments ------------------------------------------------------------
    def add_attachment(
        self, principal: Principal, ticket_id: int, *, source: BinaryIO, name: str
    ) -> TicketView:
        """One file sent on its own (:meth:`add_files`)."""
        return self.add_files(principal, ticket_id, [Upload(source, name)])

    def add_files(
        self,
        principal: Principal,
        ticket_id: int,
        files: Sequence[Upload],
        *,
        message_id: int | None = None,
    ) -> TicketView:
        """Store the files and their rows, or nothing: sent on their own (``message_id``
        None), or added to a message of the principal's own on the ticket (a new ticket's
        first message, whose files follow it).

        Raises UnknownTicket, UnknownAttachment (not the principal's message on this
        ticket), InvalidTransition (closed), TooManyAttachments, UnsupportedAttachment
        (422), AttachmentTooLarge (413).
        """
        stored = self._store_files(principal, ticket_id, files)
        try:
            now = self._clock()
            with self._store.transaction() as tx:
                row = self._load(tx, principal, ticket_id, lock=True)
                if Stage(row.stage) is Stage.CLOSED:
                    raise InvalidTransition(N_("the ticket is closed; open a new ticket"))
                if message_id is not None:
                    message = tx.get(TicketMessageRow, message_id)
                    if (
                        message is None
                        or message.ticket_id != row.id
                        or message.author != _label(principal)
                    ):
                        raise UnknownAttachment(f"no message {message_id} of yours on {row.id}")
                self._file_rows(tx, principal, row, stored, message_id=message_id, now=now)
                row.updated_at = now
                return self._view(tx, row, now=now)
        except BaseException:
            self._discard(stored)
            raise

    def _store_files(
        self, principal: Principal, ticket_id: int, files: Sequence[Upload]
    ) -> Sequence[Stored]:
        """The files on disk, once the principal may add to the open ticket (a stranger's
        upload is never read); on any refusal none of them stays."""
        if self._files is None:
            raise RuntimeError("TicketService has no attachment store")
        check_count(len(files))
        with self._store.transaction() as tx:
            if Stage(self._load(tx, principal, ticket_id).stage) is Stage.CLOSED:
                raise InvalidTransition(N_("the ticket is closed; open a new ticket"))
        stored: typing.List[Stored] = []  # noqa: UP006 (``list`` is a method here)
        try:
            for upload in files:
                stored.append(self._files.put(upload.source, name=upload.name))
        except BaseException:
            self._discard(stored)
            raise
        return stored

    def _discard(self, stored: Sequence[Stored]) -> None:
        """Remove the files this request created (their rows were not written)."""
        if self._files is None:
            return
        for file in stored:
            if file.created:
                self._files.discard(file.sha256)

    def _file_rows(
        self,
        tx: Session,
        principal: Principal,
        row: TicketRow,
        stored: Sequence[Stored],
        *,
        message_id: int | None,
        now: int,
    ) -> None:
        for file in stored:
            attachment = TicketAttachmentRow(
                ticket_id=row.id,
                message_id=message_id,
                filename=file.accepted.filename,
                content_type=file.accepted.content_type,
                size=file.size,
                sha256=file.sha256,
                uploaded_by=_label(principal),
                from_customer=not _is_staff(principal),
                uploaded_at=now,
            )
            tx.add(attachment)
            tx.flush()
            audit.record(
                tx,
                actor=principal,
                action="ticket.attachment.add",
                object_type="ticket_attachment",
                object_id=str(attachment.id),
                before=None,
                after=_attachment(attachment),
                now=now,
            )

    def delete_attachment(
        self, principal: Principal, ticket_id: int, attachment_id: int
    ) -> TicketView:
        """Support deletes any file; its uploader while the ticket is not closed. The row
        goes with an audit row. The bytes on disk stay: once no row names their SHA-256 they
        are the tickets job's orphan, removed after its grace period (removing them here
        would lose the file of an upload of the same bytes whose row is not committed yet).

        Raises UnknownTicket, UnknownAttachment, NotYourAttachment (403),
        InvalidTransition (the uploader, on a closed ticket).
        """
        now = self._clock()
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id, lock=True)
            found = tx.get(TicketAttachmentRow, attachment_id, with_for_update=True)
            if found is None or found.ticket_id != row.id:
                raise UnknownAttachment(f"no attachment {attachment_id} on ticket {row.id}")
            check_delete(
                staff=_is_staff(principal),
                own=found.uploaded_by == _label(principal),
                closed=Stage(row.stage) is Stage.CLOSED,
            )
            audit.record(
                tx,
                actor=principal,
                action="ticket.attachment.delete",
                object_type="ticket_attachment",
                object_id=str(found.id),
                before=_attachment(found),
                after=None,
                now=now,
            )
            tx.delete(found)
            row.updated_at = now
            tx.flush()
            return self._view(tx, row, now=now)

    def deletable(self, principal: Principal, ticket: TicketView) -> set[int]:
        """The ids of the ticket's files the principal may delete (the page's buttons)."""
        deletable: set[int] = set()
        for file in ticket.attachments or []:
            try:
                check_delete(
                    staff=_is_staff(principal),
                    own=file["uploaded_by"] == _label(principal),
                    closed=ticket.stage == Stage.CLOSED.value,
                )
            except (Forbidden, InvalidTransition):
                continue
            deletable.add(int(file["id"]))
        return deletable

    def attachment(
        self, principal: Principal, ticket_id: int, attachment_id: int
    ) -> AttachmentFile:
        """An attachment of a ticket the principal may read. Raises UnknownTicket,
        UnknownAttachment."""
        if self._files is None:
            raise RuntimeError("TicketService has no attachment store")
        with self._store.transaction() as tx:
            row = self._load(tx, principal, ticket_id)
            found = tx.get(TicketAttachmentRow, attachment_id)
            if found is None or found.ticket_id != row.id:
                raise UnknownAttachment(f"no attachment {attachment_id} on ticket {row.id}")
            path = self._files.path(found.sha256)
            if not path.is_file():
                _log.error("attachment %d: its file %s is missing", found.id, path)
                raise UnknownAttachment(f"no attachment {attachment_id} on ticket {row.id}")
            return AttachmentFile(path, found.filename, found.content_type, found.size)

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
