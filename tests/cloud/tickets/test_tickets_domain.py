"""Ticket rules (pure): SLAs, stages, next-action owner, auto-close, RMA decision."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.errors import InvalidTransition
from cloud.tickets.rules import (
    AUTO_CLOSE_AFTER_S,
    SELF_TEST_MAX_AGE_S,
    SLA_S,
    TRANSITIONS,
    Category,
    Owner,
    SelfTestOutcome,
    Stage,
    auto_close_due,
    decide_rma,
    move,
    on_message,
    open_ticket,
    sla_breached,
)

T0 = 1_767_225_600
DAY = 86_400


@pytest.mark.parametrize(
    ("category", "days"),
    [
        (Category.TECHNICAL, 1),
        (Category.SERVICE, 1),
        (Category.TRAINING, 1),
        (Category.DATA_ACCURACY, 3),
        (Category.CONFIGURATION, 3),
        (Category.DEVICE_FAULT, 3),
    ],
)
def test_sla_by_category(category: Category, days: int) -> None:
    ticket = open_ticket(category, now=T0)
    assert ticket.due_at == T0 + days * DAY
    assert not sla_breached(ticket, now=T0 + days * DAY)
    assert sla_breached(ticket, now=T0 + days * DAY + 1)
    # a resolution proposed in time is not a breach, whenever we look
    proposed = move(ticket, Stage.SUGGEST_CLOSE, now=T0 + days * DAY - 1)
    assert not sla_breached(proposed, now=T0 + 30 * DAY)


def test_suggest_close_hands_over_and_customer_reply_reopens() -> None:
    ticket = open_ticket(Category.TECHNICAL, now=T0)
    assert ticket.next_action is Owner.SUPPORT
    answered = on_message(ticket, from_customer=False, now=T0 + 60)
    assert answered.next_action is Owner.CUSTOMER
    suggested = move(answered, Stage.SUGGEST_CLOSE, now=T0 + 120)
    assert suggested.next_action is Owner.CUSTOMER
    reopened = on_message(suggested, from_customer=True, now=T0 + 180)
    assert reopened.stage is Stage.FIRST_LINE
    assert reopened.next_action is Owner.SUPPORT
    assert reopened.suggest_close_at is None


def test_auto_close_seven_days_after_suggest_close() -> None:
    suggested = move(open_ticket(Category.SERVICE, now=T0), Stage.SUGGEST_CLOSE, now=T0 + 10)
    assert not auto_close_due(suggested, now=T0 + 10 + AUTO_CLOSE_AFTER_S - 1)
    assert auto_close_due(suggested, now=T0 + 10 + AUTO_CLOSE_AFTER_S)


def test_closed_is_final() -> None:
    closed = move(open_ticket(Category.SERVICE, now=T0), Stage.CLOSED, now=T0 + 1)
    for stage in Stage:
        with pytest.raises(InvalidTransition):
            move(closed, stage, now=T0 + 2)
    with pytest.raises(InvalidTransition):
        on_message(closed, from_customer=True, now=T0 + 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(Stage)), st.booleans()), max_size=20))
def test_stage_machine_invariants(steps: list[tuple[Stage, bool]]) -> None:
    """Any sequence of moves and messages keeps the ticket consistent."""
    ticket = open_ticket(Category.DEVICE_FAULT, now=T0)
    now = T0
    for stage, customer in steps:
        now += 3600
        try:
            if customer:
                ticket = on_message(ticket, from_customer=True, now=now)
            else:
                allowed = stage in TRANSITIONS[ticket.stage]
                ticket = move(ticket, stage, now=now)
                assert allowed
        except InvalidTransition:
            assert ticket.stage is Stage.CLOSED or stage not in TRANSITIONS[ticket.stage]
        assert (ticket.stage is Stage.CLOSED) == (ticket.closed_at is not None)
        if ticket.stage is Stage.SUGGEST_CLOSE:
            assert ticket.suggest_close_at is not None
        elif ticket.stage is not Stage.CLOSED:  # closed keeps when it was proposed
            assert ticket.suggest_close_at is None
        assert (ticket.next_action is Owner.NOBODY) == (ticket.stage is Stage.CLOSED)
        assert ticket.due_at == T0 + SLA_S[Category.DEVICE_FAULT]


FAULT = {"passed": False, "hardware_fault": True, "faults": [{"component": "flash"}]}
PASSED = {"passed": True, "hardware_fault": False, "faults": []}
SOFT = {"passed": False, "hardware_fault": False, "faults": [{"component": "config"}]}


@pytest.mark.parametrize(
    ("tests", "approved", "why"),
    [
        ([], False, "no_self_test"),
        ([SelfTestOutcome("c1", T0 - 1, True, FAULT)], False, "no_self_test"),  # before opening
        ([SelfTestOutcome("c1", T0 + 5, True, PASSED)], False, "self_test_passed"),
        ([SelfTestOutcome("c1", T0 + 5, True, SOFT)], False, "remotely_fixable"),
        ([SelfTestOutcome("c1", T0 + 5, False, None)], False, "self_test_error"),
        ([SelfTestOutcome("c1", T0 + 5, True, FAULT)], True, "approved"),
        # the newest counts: a later pass overrides an earlier fault
        (
            [
                SelfTestOutcome("c1", T0 + 5, True, FAULT),
                SelfTestOutcome("c2", T0 + 9, True, PASSED),
            ],
            False,
            "self_test_passed",
        ),
    ],
)
def test_rma_decision(tests: list[SelfTestOutcome], approved: bool, why: str) -> None:
    ticket = open_ticket(Category.DEVICE_FAULT, now=T0)
    decision = decide_rma(
        device_id="cam-1", ticket=ticket, device_on_ticket=True, self_tests=tests, now=T0 + 60
    )
    assert decision.approved is approved
    assert decision.why == why
    assert decision.detail


def test_rma_needs_an_open_ticket_the_device_is_attached_to_and_a_recent_test() -> None:
    ticket = open_ticket(Category.DEVICE_FAULT, now=T0)
    fault = [SelfTestOutcome("c1", T0 + 5, True, FAULT)]

    def why(**changes: Any) -> str:
        args: dict[str, Any] = {
            "device_id": "cam-1",
            "ticket": ticket,
            "device_on_ticket": True,
            "self_tests": fault,
            "now": T0 + 60,
            **changes,
        }
        return decide_rma(**args).why

    assert why() == "approved"
    assert why(device_on_ticket=False) == "device_not_on_ticket"
    assert why(ticket=move(ticket, Stage.CLOSED, now=T0 + 30)) == "ticket_closed"
    assert why(now=T0 + 5 + SELF_TEST_MAX_AGE_S) == "approved"
    assert why(now=T0 + 6 + SELF_TEST_MAX_AGE_S) == "self_test_stale"
    assert why(now=T0 + 60, max_age_s=30) == "self_test_stale"
    # a later pass supersedes the fault, however recent the fault is
    later_pass = [*fault, SelfTestOutcome("c2", T0 + 9, True, PASSED)]
    assert why(self_tests=later_pass) == "self_test_passed"
