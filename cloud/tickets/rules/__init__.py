"""Support tickets and RMA approval (pure, no I/O, ``now`` passed in).

A ticket has a category with an SLA (time to a proposed resolution), a stage
(``first_line`` -> ``second_line`` -> ``third_line`` -> ``suggest_close`` -> ``closed``),
a status within the stage (:class:`Status`: open, recheck approved, hard to configure,
suggested close, closed) and the party who owes the next action. A ticket left in
``suggest_close`` for :data:`AUTO_CLOSE_AFTER_S` closes itself.

Categories are the vendor manual's; :data:`SUPPORT_ONLY` ones (software bug,
accuracy-audit blockade) only support chooses: a customer is refused
(:func:`check_category`), and support re-categorises. Each line has its own SLA
(:data:`LINE_SLA`: a first response and a resolution target from when the ticket
entered the line; :func:`line_clock`); a ticket past either SLA is breached
(:func:`breached`). Escalating to the third line needs a plan and an
ETA (:func:`escalate_third_line`). Action tasks (:class:`TaskStatus`) move by
:data:`TASK_MOVES`. The attachment acceptance is :mod:`cloud.tickets.rules.files`,
the check before a report :mod:`cloud.tickets.rules.precheck`.

An RMA is approved (:func:`decide_rma`) only on an open (not closed) ticket,
for a device *attached to that ticket* (attaching checks the device is in
the principal's scope and shows on the ticket which devices it is about; a
device of the same installation that nobody attached is not what the ticket
is about), when the latest self-test of that device answered since the
ticket opened, at most ``max_age_s`` ago (:data:`SELF_TEST_MAX_AGE_S`), reports
a hardware fault. A later self-test that passed supersedes an earlier fault.
The category is not checked: it is the customer's first guess, and the
self-test, not the category, is the evidence. :func:`check_rma` is the same
rule raising its refusal (:class:`RmaRefused`, its text marked for translation).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloud.accounts.rules import STAFF_ROLES
from cloud.errors import N_, Conflict, Forbidden, InvalidRequest, InvalidTransition
from cloud.health.rules.diagnostics import SELF_TEST_MAX_AGE_S

__all__ = [
    "AUTO_CLOSE_AFTER_S",
    "CUSTOMER_MOVES",
    "LINE_SLA",
    "LINES",
    "MAX_ETA_S",
    "SUPPORT_ONLY",
    "TASK_MOVES",
    "CategoryRefused",
    "LineClock",
    "LineSla",
    "Status",
    "TaskStatus",
    "TaskType",
    "check_category",
    "check_responsible",
    "recategorise",
    "escalate_third_line",
    "line_clock",
    "move_task",
    "set_status",
    "SELF_TEST_MAX_AGE_S",
    "SLA_S",
    "TRANSITIONS",
    "Category",
    "Owner",
    "RmaDecision",
    "RmaRefused",
    "SelfTestOutcome",
    "Stage",
    "TicketState",
    "auto_close_due",
    "breached",
    "check_rma",
    "decide_rma",
    "move",
    "moves",
    "on_message",
    "open_ticket",
    "sla_breached",
]

DAY = 86_400
AUTO_CLOSE_AFTER_S = 7 * DAY


class Category(enum.StrEnum):
    TECHNICAL = "technical"
    SERVICE = "service"
    TRAINING = "training"
    DATA_ACCURACY = "data_accuracy"
    CONFIGURATION = "configuration"
    DEVICE_FAULT = "device_fault"
    # the vendor manual's (values fit the 16-character column)
    SOFTWARE_BUG = "software_bug"
    BUSINESS_INQUIRY = "business_inquiry"
    AUDIT_BLOCKADE = "audit_blockade"  # accuracy-audit blockade


SUPPORT_ONLY: frozenset[Category] = frozenset({Category.SOFTWARE_BUG, Category.AUDIT_BLOCKADE})
"""Categories only support chooses: a bug is support's finding, a blocked audit support's
escalation; a customer reports what they see (technical, data accuracy, ...)."""


class CategoryRefused(Forbidden):
    """A customer chose a category only support may choose."""


def check_category(category: Category, *, staff: bool) -> Category:
    """The category, if the principal may choose it.

    Raises:
        CategoryRefused: a customer chose a support-only category.
    """
    if category in SUPPORT_ONLY and not staff:
        raise CategoryRefused(
            N_("only support files a ticket as %(category)s: choose another category"),
            category=category.value,
        )
    return category


def check_responsible(role: str | None, *, disabled: bool, user_id: int) -> None:
    """A responsible person is an active user of support (admin, customer-service admin,
    support agent).

    Raises:
        InvalidRequest: no such user, disabled, or not of support.
    """
    if role is None or disabled or role not in STAFF_ROLES:
        raise InvalidRequest(
            N_("user %(user)s is not an active support user: choose someone of support"),
            user=user_id,
        )


SLA_S: Mapping[Category, int] = {
    Category.TECHNICAL: DAY,
    Category.SERVICE: DAY,
    Category.TRAINING: DAY,
    Category.DATA_ACCURACY: 3 * DAY,
    Category.CONFIGURATION: 3 * DAY,
    Category.DEVICE_FAULT: 3 * DAY,
    Category.SOFTWARE_BUG: 3 * DAY,
    Category.BUSINESS_INQUIRY: DAY,
    Category.AUDIT_BLOCKADE: DAY,
}


class Stage(enum.StrEnum):
    FIRST_LINE = "first_line"
    SECOND_LINE = "second_line"
    THIRD_LINE = "third_line"
    SUGGEST_CLOSE = "suggest_close"
    CLOSED = "closed"


class Owner(enum.StrEnum):
    """Who owes the next action on a ticket."""

    SUPPORT = "support"
    CUSTOMER = "customer"
    NOBODY = "nobody"


class Status(enum.StrEnum):
    """Where a ticket is within its stage (the vendor manual's statuses)."""

    OPEN = "open"
    RECHECK_APPROVED = "recheck_approved"  # the customer agreed to a data recheck
    HARD_TO_CONFIGURE = "hard_to_config"  # the site is hard to configure: takes longer
    SUGGESTED_CLOSE = "suggested_close"
    CLOSED = "closed"


LINES: tuple[Stage, ...] = (Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.THIRD_LINE)
"""The open stages: a line of support works on the ticket."""

TRANSITIONS: Mapping[Stage, frozenset[Stage]] = {
    Stage.FIRST_LINE: frozenset(
        {Stage.SECOND_LINE, Stage.THIRD_LINE, Stage.SUGGEST_CLOSE, Stage.CLOSED}
    ),
    Stage.SECOND_LINE: frozenset(
        {Stage.FIRST_LINE, Stage.THIRD_LINE, Stage.SUGGEST_CLOSE, Stage.CLOSED}
    ),
    Stage.THIRD_LINE: frozenset(
        {Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.SUGGEST_CLOSE, Stage.CLOSED}
    ),
    Stage.SUGGEST_CLOSE: frozenset(
        {Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.THIRD_LINE, Stage.CLOSED}
    ),
    Stage.CLOSED: frozenset(),
}

CUSTOMER_MOVES: frozenset[Stage] = frozenset({Stage.CLOSED})
"""The stages a customer may move its ticket to; support moves it otherwise."""


def moves(stage: Stage, *, staff: bool) -> frozenset[Stage]:
    """The stages a ticket in ``stage`` can be moved to by staff, or by the customer."""
    return TRANSITIONS[stage] if staff else TRANSITIONS[stage] & CUSTOMER_MOVES


class RmaRefused(Conflict):
    """No self-test confirms a hardware fault; ``why`` says which case, ``command_id`` the
    self-test the refusal read (None before there is one)."""

    def __init__(
        self, message: str, /, *, why: str, command_id: str | None = None, **params: Any
    ) -> None:
        super().__init__(message, **params)
        self.why = why
        self.command_id = command_id


@dataclass(frozen=True, slots=True)
class TicketState:
    category: Category
    stage: Stage
    next_action: Owner
    opened_at: int
    due_at: int
    suggest_close_at: int | None = None
    closed_at: int | None = None
    status: Status = Status.OPEN
    stage_since: int | None = None  # when it entered its stage (None: when it opened)
    responded_at: int | None = None  # support's first message in this stage
    plan: str | None = None  # the third line's plan and ETA
    eta: int | None = None


def open_ticket(category: Category, *, now: int) -> TicketState:
    """A new ticket in first line, support to act, due after its category's SLA."""
    return TicketState(
        category=category,
        stage=Stage.FIRST_LINE,
        next_action=Owner.SUPPORT,
        opened_at=now,
        due_at=now + SLA_S[category],
        stage_since=now,
    )


def recategorise(state: TicketState, category: Category) -> TicketState:
    """Support's new category; the SLA follows it (due after the new category's time from
    the opening).

    Raises:
        InvalidTransition: the ticket is closed.
    """
    if state.stage is Stage.CLOSED:
        raise InvalidTransition(N_("the ticket is closed; open a new ticket"))
    return replace(state, category=category, due_at=state.opened_at + SLA_S[category])


_STAGE_STATUS: Mapping[Stage, Status] = {
    Stage.SUGGEST_CLOSE: Status.SUGGESTED_CLOSE,
    Stage.CLOSED: Status.CLOSED,
}
_SETTABLE = frozenset({Status.OPEN, Status.RECHECK_APPROVED, Status.HARD_TO_CONFIGURE})


def set_status(state: TicketState, status: Status) -> TicketState:
    """Support sets the status within an open line; suggested-close and closed come with
    their stage (:func:`move`).

    Raises:
        InvalidTransition: the ticket is not on a line, or the status belongs to a stage.
    """
    if state.stage not in LINES:
        raise InvalidTransition(
            N_("a ticket in %(stage)s keeps its status; move it to a line first"),
            stage=state.stage.value,
        )
    if status not in _SETTABLE:
        raise InvalidTransition(
            N_("the status %(status)s comes with its stage: move the ticket instead"),
            status=status.value,
        )
    return replace(state, status=status)


MAX_ETA_S = 365 * DAY


def escalate_third_line(state: TicketState, *, plan: str, eta: int, now: int) -> TicketState:
    """Move to the third line with its plan and ETA (the engineers' commitment).

    Raises:
        InvalidRequest: no plan, or an ETA in the past or over a year ahead.
        InvalidTransition: the stage cannot move to the third line.
    """
    if not plan.strip():
        raise InvalidRequest(N_("the third line needs a plan: say what will be done"))
    if not now < eta <= now + MAX_ETA_S:
        raise InvalidRequest(N_("the ETA must be in the future, at most a year ahead"))
    moved = move(state, Stage.THIRD_LINE, now=now)
    return replace(moved, plan=plan.strip(), eta=eta)


@dataclass(frozen=True, slots=True)
class LineSla:
    """One line's targets from when the ticket entered it: a first answer, a resolution."""

    response_s: int
    resolution_s: int


LINE_SLA: Mapping[Stage, LineSla] = {
    Stage.FIRST_LINE: LineSla(response_s=4 * 3600, resolution_s=DAY),
    Stage.SECOND_LINE: LineSla(response_s=DAY, resolution_s=3 * DAY),
    Stage.THIRD_LINE: LineSla(response_s=2 * DAY, resolution_s=10 * DAY),
}


@dataclass(frozen=True, slots=True)
class LineClock:
    """The SLA of the line a ticket is on: due times and whether each is breached now."""

    line: Stage
    response_due: int
    resolution_due: int
    responded: bool
    response_breached: bool
    resolution_breached: bool


def line_clock(state: TicketState, *, now: int) -> LineClock | None:
    """The current line's SLA clock; None off the lines (suggest-close, closed).

    The response target is met by support's first message in the line (``responded_at``);
    the third line's resolution target is its ETA when that is earlier.
    """
    if state.stage not in LINES:
        return None
    sla = LINE_SLA[state.stage]
    since = state.stage_since if state.stage_since is not None else state.opened_at
    response_due = since + sla.response_s
    resolution_due = since + sla.resolution_s
    if state.stage is Stage.THIRD_LINE and state.eta is not None:
        resolution_due = min(resolution_due, state.eta)
    answered_at = state.responded_at if state.responded_at is not None else now
    answered = state.responded_at is not None and answered_at >= since
    return LineClock(
        line=state.stage,
        response_due=response_due,
        resolution_due=resolution_due,
        responded=answered,
        response_breached=(answered_at if answered else now) > response_due,
        resolution_breached=now > resolution_due,
    )


class TaskType(enum.StrEnum):
    """What an action task is (the manual's action list)."""

    REMOTE_CHECK = "remote_check"
    RECONFIGURE = "reconfigure"
    DATA_RECHECK = "data_recheck"
    SITE_VISIT = "site_visit"
    RMA = "rma"
    DEVELOPMENT = "development"
    OTHER = "other"


class TaskStatus(enum.StrEnum):
    TODO = "todo"
    DOING = "doing"
    DONE = "done"
    CANCELLED = "cancelled"


TASK_MOVES: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.TODO: frozenset({TaskStatus.DOING, TaskStatus.DONE, TaskStatus.CANCELLED}),
    TaskStatus.DOING: frozenset({TaskStatus.TODO, TaskStatus.DONE, TaskStatus.CANCELLED}),
    TaskStatus.DONE: frozenset({TaskStatus.DOING}),  # reopened: it was not done after all
    TaskStatus.CANCELLED: frozenset({TaskStatus.TODO}),
}


def move_task(current: TaskStatus, to: TaskStatus) -> TaskStatus:
    """A task's next status; staying put is allowed (an edit of its other fields).

    Raises:
        InvalidTransition: ``to`` is not reachable from ``current``.
    """
    if to is current or to in TASK_MOVES[current]:
        return to
    raise InvalidTransition(
        N_("a task that is %(status)s cannot become %(to)s"), status=current.value, to=to.value
    )


def move(state: TicketState, to: Stage, *, now: int) -> TicketState:
    """Change stage; suggest-close hands the next action to the customer.

    Raises:
        InvalidTransition: ``to`` is not reachable from the current stage.
    """
    if to not in TRANSITIONS[state.stage]:
        if state.stage is Stage.CLOSED:
            raise InvalidTransition(
                N_("a ticket in %(stage)s cannot move to %(to)s; open a new ticket"),
                stage=state.stage.value,
                to=to.value,
            )
        raise InvalidTransition(
            N_("a ticket in %(stage)s cannot move to %(to)s"),
            stage=state.stage.value,
            to=to.value,
        )
    status = _STAGE_STATUS.get(to, Status.OPEN)
    entered = replace(state, stage=to, status=status, stage_since=now)
    if to is Stage.CLOSED:
        return replace(entered, next_action=Owner.NOBODY, closed_at=now)
    if to is Stage.SUGGEST_CLOSE:
        return replace(entered, next_action=Owner.CUSTOMER, suggest_close_at=now)
    if to is not Stage.THIRD_LINE:
        entered = replace(entered, plan=None, eta=None)
    return replace(entered, next_action=Owner.SUPPORT, suggest_close_at=None)


def on_message(state: TicketState, *, from_customer: bool, now: int) -> TicketState:
    """A message moves the next action to the other party; a customer reply reopens.

    Raises:
        InvalidTransition: the ticket is closed.
    """
    if state.stage is Stage.CLOSED:
        raise InvalidTransition(N_("the ticket is closed; open a new ticket"))
    if from_customer:
        if state.stage is Stage.SUGGEST_CLOSE:
            return move(state, Stage.FIRST_LINE, now=now)
        return replace(state, next_action=Owner.SUPPORT)
    first = state.responded_at is None or state.responded_at < (state.stage_since or 0)
    return replace(
        state, next_action=Owner.CUSTOMER, responded_at=now if first else state.responded_at
    )


def sla_breached(state: TicketState, *, now: int) -> bool:
    """No resolution proposed (suggest-close) or reached (closed) by the due time."""
    resolved_at = state.suggest_close_at or state.closed_at
    if resolved_at is not None:
        return resolved_at > state.due_at
    return now > state.due_at


def breached(state: TicketState, *, now: int) -> bool:
    """Whether the ticket is past an SLA now: its category's (:func:`sla_breached`) or,
    on a line, that line's own (:func:`line_clock`: no first answer by the response
    target, or no resolution by the resolution target, the third line's ETA included).
    The tickets job flags what this says."""
    if sla_breached(state, now=now):
        return True
    clock = line_clock(state, now=now)
    return clock is not None and (clock.response_breached or clock.resolution_breached)


def auto_close_due(state: TicketState, *, now: int) -> bool:
    return (
        state.stage is Stage.SUGGEST_CLOSE
        and state.suggest_close_at is not None
        and now >= state.suggest_close_at + AUTO_CLOSE_AFTER_S
    )


@dataclass(frozen=True, slots=True)
class SelfTestOutcome:
    """One answered ``self_test`` command: its id, when it answered, and the result."""

    command_id: str
    answered_at: int
    ok: bool
    result: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class RmaDecision:
    approved: bool
    # approved | ticket_closed | device_not_on_ticket | no_self_test | self_test_stale
    # | self_test_error | self_test_passed | remotely_fixable
    why: str
    detail: str
    command_id: str | None


def decide_rma(
    *,
    device_id: str,
    ticket: TicketState,
    device_on_ticket: bool,
    self_tests: Sequence[SelfTestOutcome],
    now: int,
    max_age_s: int = SELF_TEST_MAX_AGE_S,
) -> RmaDecision:
    """Approve an RMA only on the newest self-test since the ticket opened saying hardware_fault.

    ``self_tests`` are in the order they were sent; of two answered in the same
    second the later one counts. The newest must be at most ``max_age_s`` old.
    A refusal is a decision here (``approved`` False); :func:`check_rma` raises it.
    """
    try:
        return check_rma(
            device_id=device_id,
            ticket=ticket,
            device_on_ticket=device_on_ticket,
            self_tests=self_tests,
            now=now,
            max_age_s=max_age_s,
        )
    except RmaRefused as refused:
        return RmaDecision(False, refused.why, str(refused), refused.command_id)


def check_rma(
    *,
    device_id: str,
    ticket: TicketState,
    device_on_ticket: bool,
    self_tests: Sequence[SelfTestOutcome],
    now: int,
    max_age_s: int = SELF_TEST_MAX_AGE_S,
) -> RmaDecision:
    """The approval :func:`decide_rma` gives, or its refusal raised.

    Raises:
        RmaRefused: closed ticket, device not attached, or no recent self-test
            confirming a hardware fault (``why`` says which case).
    """
    if ticket.stage is Stage.CLOSED:
        raise RmaRefused(
            N_("the ticket is closed: open a new ticket for the device"), why="ticket_closed"
        )
    if not device_on_ticket:
        raise RmaRefused(
            N_("%(device)s is not attached to this ticket: attach it first"),
            why="device_not_on_ticket",
            device=device_id,
        )
    recent = [t for t in self_tests if ticket.opened_at <= t.answered_at <= now]
    if not recent:
        raise RmaRefused(
            N_(
                "no self-test of %(device)s answered since the ticket was opened: "
                "send the self_test command and wait for its result"
            ),
            why="no_self_test",
            device=device_id,
        )
    latest = max(enumerate(recent), key=lambda pair: (pair[1].answered_at, pair[0]))[1]
    result = latest.result or {}
    if latest.answered_at < now - max_age_s:
        raise RmaRefused(
            N_(
                "the latest self-test of %(device)s is older than %(hours)d h: "
                "send the self_test command again"
            ),
            why="self_test_stale",
            command_id=latest.command_id,
            device=device_id,
            hours=max_age_s // 3600,
        )
    if not latest.ok:
        raise RmaRefused(
            N_("the latest self-test did not run; send it again"),
            why="self_test_error",
            command_id=latest.command_id,
        )
    if result.get("hardware_fault") is True:
        faults = [f.get("component") for f in result.get("faults", []) if isinstance(f, Mapping)]
        return RmaDecision(
            True, "approved", f"self-test reports a hardware fault in {faults}", latest.command_id
        )
    if result.get("passed") is True:
        raise RmaRefused(
            N_("the latest self-test passed: the hardware is fine"),
            why="self_test_passed",
            command_id=latest.command_id,
        )
    raise RmaRefused(
        N_("the latest self-test found only faults that can be fixed remotely"),
        why="remotely_fixable",
        command_id=latest.command_id,
    )
