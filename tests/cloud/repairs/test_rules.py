"""The repair rules, exhaustively: every (path, status, step, who), warranty dates, shipments,
and hypothesis over sequences of steps (derandomized by the suite's profile)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloud.errors import Forbidden, InvalidRequest, InvalidTransition
from cloud.repairs.rules import (
    CUSTOMER_STEPS,
    STAFF_STEPS,
    TERMINAL,
    TRANSITIONS,
    Path,
    ShipmentKind,
    ShipmentStatus,
    Status,
    Step,
    add_months,
    cancel_shipment,
    check_quote,
    check_replacement_serial,
    check_reship,
    initial_status,
    next_step,
    refund_on_cancel,
    shipment_step,
    steps,
    warranty,
)

S, E = Status, Step

WARRANTY_PATH = [S.REQUESTED, S.APPROVED, S.REPLACEMENT_SENT, S.RECEIVED, S.CLOSED]
PAID_PATH = [S.REQUESTED, S.QUOTED, S.PAID, S.RECEIVED, S.REPAIRED, S.RETURNED, S.CLOSED]
ONLY_WARRANTY = {S.APPROVED, S.REPLACEMENT_SENT}
ONLY_PAID = {S.QUOTED, S.PAID, S.DECLINED, S.REPAIRED, S.RETURNED}


def _epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("path", list(Path))
@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("staff", [True, False])
def test_every_step_in_every_status_follows_the_table(
    path: Path, status: Status, step: Step, staff: bool
) -> None:
    to = TRANSITIONS.get((path, status, step))
    mine = step in (STAFF_STEPS if staff else CUSTOMER_STEPS)
    customer_cancel_late = (
        not staff and step is E.CANCEL and status not in (S.REQUESTED, S.APPROVED, S.QUOTED)
    )
    if to is None:
        with pytest.raises(InvalidTransition):
            next_step(path, status, step, staff=staff)
        assert step not in steps(path, status, staff=staff)
    elif not mine or customer_cancel_late:
        with pytest.raises(Forbidden):
            next_step(path, status, step, staff=staff)
        assert step not in steps(path, status, staff=staff)
    else:
        assert next_step(path, status, step, staff=staff) is to
        assert step in steps(path, status, staff=staff)


def test_the_happy_paths_are_in_the_table() -> None:
    walk = {
        Path.WARRANTY: [E.APPROVE, E.SHIP_REPLACEMENT, E.RECEIVE, E.CLOSE],
        Path.PAID: [E.QUOTE, E.PAY, E.RECEIVE, E.MARK_REPAIRED, E.SHIP_RETURN, E.CLOSE],
    }
    for path, expected in ((Path.WARRANTY, WARRANTY_PATH), (Path.PAID, PAID_PATH)):
        status, seen = S.REQUESTED, [S.REQUESTED]
        for step in walk[path]:
            status = TRANSITIONS[(path, status, step)]
            seen.append(status)
        assert seen == expected


def test_terminal_statuses_accept_nothing() -> None:
    for (_, status, _), _to in TRANSITIONS.items():
        assert status not in TERMINAL


def test_initial_status_and_refunds() -> None:
    assert initial_status(in_warranty=True, rma_approved=True) is S.APPROVED
    assert initial_status(in_warranty=True, rma_approved=False) is S.REQUESTED
    assert initial_status(in_warranty=False, rma_approved=True) is S.REQUESTED  # quote first
    assert [s for s in Status if refund_on_cancel(s)] == [S.PAID]


@pytest.mark.parametrize(
    ("installed", "months", "ends"),
    [
        (_epoch(2024, 1, 15, 10), 24, _epoch(2026, 1, 15, 10)),
        (_epoch(2024, 1, 31), 1, _epoch(2024, 2, 29)),  # leap year: the month's last day
        (_epoch(2023, 1, 31), 1, _epoch(2023, 2, 28)),
        (_epoch(2024, 11, 30), 3, _epoch(2025, 2, 28)),
        (_epoch(2024, 12, 1), 12, _epoch(2025, 12, 1)),
        (_epoch(2024, 5, 5), 0, _epoch(2024, 5, 5)),
    ],
)
def test_warranty_ends_after_the_term_in_calendar_months(
    installed: int, months: int, ends: int
) -> None:
    assert add_months(installed, months) == ends
    if months > 0:
        assert warranty(installed_at=installed, term_months=months, now=ends - 1).in_warranty
    assert warranty(installed_at=installed, term_months=months, now=ends).in_warranty is False


def test_a_negative_term_is_a_bug() -> None:
    with pytest.raises(ValueError):
        warranty(installed_at=0, term_months=-1, now=0)


def test_shipments() -> None:
    assert (
        shipment_step(Path.WARRANTY, S.APPROVED, ShipmentKind.REPLACEMENT, staff=True)
        is S.REPLACEMENT_SENT
    )
    assert shipment_step(Path.PAID, S.PAID, ShipmentKind.INBOUND, staff=False) is S.PAID
    with pytest.raises(InvalidTransition):
        shipment_step(Path.PAID, S.QUOTED, ShipmentKind.INBOUND, staff=False)
    with pytest.raises(Forbidden):
        shipment_step(Path.WARRANTY, S.APPROVED, ShipmentKind.REPLACEMENT, staff=False)
    assert cancel_shipment(S.REPLACEMENT_SENT, ShipmentKind.REPLACEMENT, ShipmentStatus.ACTIVE) is (
        S.APPROVED
    )
    assert cancel_shipment(S.RETURNED, ShipmentKind.RETURN, ShipmentStatus.ACTIVE) is S.REPAIRED
    assert cancel_shipment(S.PAID, ShipmentKind.INBOUND, ShipmentStatus.ACTIVE) is S.PAID
    with pytest.raises(InvalidTransition):  # delivered: the repair moved on
        cancel_shipment(S.RECEIVED, ShipmentKind.REPLACEMENT, ShipmentStatus.ACTIVE)
    for done in (ShipmentStatus.RESHIPPED, ShipmentStatus.CANCELLED):
        with pytest.raises(InvalidTransition):
            check_reship(S.REPLACEMENT_SENT, done)
    with pytest.raises(InvalidTransition):
        check_reship(S.CLOSED, ShipmentStatus.ACTIVE)


@pytest.mark.parametrize("cents", [0, -1, 10_000_001])
def test_a_quote_is_a_positive_bounded_amount(cents: int) -> None:
    with pytest.raises(InvalidRequest):
        check_quote(cents)


@given(
    path=st.sampled_from(list(Path)),
    moves=st.lists(st.tuples(st.sampled_from(list(Step)), st.booleans()), max_size=30),
)
@example(path=Path.PAID, moves=[(E.QUOTE, True), (E.PAY, False), (E.CANCEL, False)])
@example(path=Path.WARRANTY, moves=[(E.APPROVE, True), (E.QUOTE, True)])
def test_any_sequence_of_steps_stays_on_its_path(
    path: Path, moves: list[tuple[Step, bool]]
) -> None:
    status = S.REQUESTED
    foreign = ONLY_PAID if path is Path.WARRANTY else ONLY_WARRANTY
    paid = False
    for step, staff in moves:
        try:
            after = next_step(path, status, step, staff=staff)
        except (InvalidTransition, Forbidden):
            assert step not in steps(path, status, staff=staff)
            continue  # refused: the status is unchanged
        assert after not in foreign
        assert status not in TERMINAL
        if after is S.CANCELLED:
            assert not (paid and not staff)  # a customer never cancels after paying
        paid = paid or after is S.PAID
        if after is S.PAID:
            assert not staff  # billing's step, on the customer's behalf
        status = after
    assert status in (WARRANTY_PATH if path is Path.WARRANTY else PAID_PATH) + [
        S.CANCELLED,
        S.DECLINED,
    ]


@pytest.mark.parametrize(
    ("kind", "serial", "refused"),
    [
        (ShipmentKind.REPLACEMENT, "cam-2", False),
        (ShipmentKind.REPLACEMENT, "A" * 64, False),
        (ShipmentKind.REPLACEMENT, None, True),
        (ShipmentKind.REPLACEMENT, "", True),
        (ShipmentKind.REPLACEMENT, "A" * 65, True),
        (ShipmentKind.REPLACEMENT, "cam 2", True),
        (ShipmentKind.REPLACEMENT, "cam/2", True),
        (ShipmentKind.REPLACEMENT, "cam-1", True),  # the device it replaces
        (ShipmentKind.INBOUND, None, False),
        (ShipmentKind.RETURN, None, False),
        (ShipmentKind.INBOUND, "cam-2", True),
        (ShipmentKind.RETURN, "cam-2", True),
    ],
)
def test_a_replacement_and_only_a_replacement_names_a_serial_of_its_own(
    kind: ShipmentKind, serial: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(InvalidRequest):
            check_replacement_serial(kind, serial, device_id="cam-1")
    else:
        check_replacement_serial(kind, serial, device_id="cam-1")
