"""Support tickets and RMA approval (pure, no I/O, ``now`` passed in).

A ticket has a category with an SLA (time to a proposed resolution), a stage
(``first_line`` -> ``second_line`` -> ``suggest_close`` -> ``closed``) and the
party who owes the next action. A ticket left in ``suggest_close`` for
:data:`AUTO_CLOSE_AFTER_S` closes itself.

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

from cloud.errors import N_, Conflict, InvalidTransition
from cloud.health.rules.diagnostics import SELF_TEST_MAX_AGE_S

__all__ = [
    "AUTO_CLOSE_AFTER_S",
    "CUSTOMER_MOVES",
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


SLA_S: Mapping[Category, int] = {
    Category.TECHNICAL: DAY,
    Category.SERVICE: DAY,
    Category.TRAINING: DAY,
    Category.DATA_ACCURACY: 3 * DAY,
    Category.CONFIGURATION: 3 * DAY,
    Category.DEVICE_FAULT: 3 * DAY,
}


class Stage(enum.StrEnum):
    FIRST_LINE = "first_line"
    SECOND_LINE = "second_line"
    SUGGEST_CLOSE = "suggest_close"
    CLOSED = "closed"


class Owner(enum.StrEnum):
    """Who owes the next action on a ticket."""

    SUPPORT = "support"
    CUSTOMER = "customer"
    NOBODY = "nobody"


TRANSITIONS: Mapping[Stage, frozenset[Stage]] = {
    Stage.FIRST_LINE: frozenset({Stage.SECOND_LINE, Stage.SUGGEST_CLOSE, Stage.CLOSED}),
    Stage.SECOND_LINE: frozenset({Stage.FIRST_LINE, Stage.SUGGEST_CLOSE, Stage.CLOSED}),
    Stage.SUGGEST_CLOSE: frozenset({Stage.FIRST_LINE, Stage.SECOND_LINE, Stage.CLOSED}),
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


def open_ticket(category: Category, *, now: int) -> TicketState:
    """A new ticket in first line, support to act, due after its category's SLA."""
    return TicketState(
        category=category,
        stage=Stage.FIRST_LINE,
        next_action=Owner.SUPPORT,
        opened_at=now,
        due_at=now + SLA_S[category],
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
    if to is Stage.CLOSED:
        return replace(state, stage=to, next_action=Owner.NOBODY, closed_at=now)
    if to is Stage.SUGGEST_CLOSE:
        return replace(state, stage=to, next_action=Owner.CUSTOMER, suggest_close_at=now)
    return replace(state, stage=to, next_action=Owner.SUPPORT, suggest_close_at=None)


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
    return replace(state, next_action=Owner.CUSTOMER)


def sla_breached(state: TicketState, *, now: int) -> bool:
    """No resolution proposed (suggest-close) or reached (closed) by the due time."""
    resolved_at = state.suggest_close_at or state.closed_at
    if resolved_at is not None:
        return resolved_at > state.due_at
    return now > state.due_at


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
