"""Repairs as pure rules: warranty, the repair's state machine, shipments (no I/O, ``now`` in).

A repair follows one of two paths, fixed when it is requested by the device's warranty
(:func:`warranty`: the device's registration date + the configured term in months)::

    in warranty (a replacement):
        requested ─approve─▶ approved ─ship_replacement─▶ replacement_sent
                    ─receive (the old device is back)─▶ received ─close─▶ closed
    out of warranty (a paid repair):
        requested ─quote─▶ quoted ─pay (billing says paid)─▶ paid ─receive─▶ received
                    ─mark_repaired─▶ repaired ─ship_return─▶ returned ─close─▶ closed
                    quoted ─decline─▶ declined ─close─▶ closed

A repair created from an approved RMA of a device in warranty starts ``approved``
(:func:`initial_status`). ``cancel`` ends a repair before anything was shipped or
received (``requested``, ``approved``, ``quoted``, ``paid``); cancelling a paid one
gives the payment back through billing (:func:`refund_on_cancel`).

Shipments (each with carrier and tracking number): the replacement going out, the old
device coming in, the repaired device going back. Adding an outbound one is the step
``ship_replacement`` / ``ship_return``; an inbound one is recorded while the old device is
awaited and moves nothing. A lost shipment is *reshipped* (a new one replaces it) and
an outbound one may be *cancelled* while it is the one the status rests on: the status
goes back (``replacement_sent`` → ``approved``, ``returned`` → ``repaired``).

Who: staff (admin, customer-service admin, support) take the workshop's steps; the
customer (owner or partner of the installation) accepts and pays a quote or declines
it, and may cancel before payment. :data:`TRANSITIONS` is the whole table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cloud.errors import N_, Forbidden, InvalidRequest, InvalidTransition
from protocol.errors import TopicError
from protocol.topics import check_device_id

__all__ = [
    "CUSTOMER_STEPS",
    "DEFAULT_WARRANTY_MONTHS",
    "MAX_QUOTE_CENTS",
    "STAFF_STEPS",
    "TERMINAL",
    "TRANSITIONS",
    "Path",
    "ShipmentKind",
    "ShipmentStatus",
    "Status",
    "Step",
    "Warranty",
    "add_months",
    "cancel_shipment",
    "check_quote",
    "check_replacement_serial",
    "check_reship",
    "initial_status",
    "next_step",
    "path_of",
    "refund_on_cancel",
    "shipment_step",
    "steps",
    "warranty",
]

DEFAULT_WARRANTY_MONTHS = 24
MAX_QUOTE_CENTS = 10_000_000  # 100,000.00 in the currency: far above any repair


class Path(enum.StrEnum):
    WARRANTY = "warranty"  # a replacement, free
    PAID = "paid"  # an out-of-warranty repair, quoted and paid


class Status(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REPLACEMENT_SENT = "replacement_sent"
    QUOTED = "quoted"
    PAID = "paid"
    DECLINED = "declined"
    RECEIVED = "received"
    REPAIRED = "repaired"
    RETURNED = "returned"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Step(enum.StrEnum):
    APPROVE = "approve"
    QUOTE = "quote"
    PAY = "pay"
    DECLINE = "decline"
    SHIP_REPLACEMENT = "ship_replacement"
    RECEIVE = "receive"
    MARK_REPAIRED = "mark_repaired"
    SHIP_RETURN = "ship_return"
    CLOSE = "close"
    CANCEL = "cancel"


class ShipmentKind(enum.StrEnum):
    REPLACEMENT = "replacement"  # out: a new device to the customer
    INBOUND = "inbound"  # in: the customer's old device to the repair centre
    RETURN = "return"  # out: the repaired device back to the customer


class ShipmentStatus(enum.StrEnum):
    ACTIVE = "active"
    RESHIPPED = "reshipped"  # lost; a new shipment replaced it
    CANCELLED = "cancelled"


_S, _E, _W, _P = Status, Step, Path.WARRANTY, Path.PAID
TRANSITIONS: Mapping[tuple[Path, Status, Step], Status] = {
    (_W, _S.REQUESTED, _E.APPROVE): _S.APPROVED,
    (_W, _S.APPROVED, _E.SHIP_REPLACEMENT): _S.REPLACEMENT_SENT,
    (_W, _S.REPLACEMENT_SENT, _E.RECEIVE): _S.RECEIVED,
    (_W, _S.RECEIVED, _E.CLOSE): _S.CLOSED,
    (_P, _S.REQUESTED, _E.QUOTE): _S.QUOTED,
    (_P, _S.QUOTED, _E.PAY): _S.PAID,
    (_P, _S.QUOTED, _E.DECLINE): _S.DECLINED,
    (_P, _S.PAID, _E.RECEIVE): _S.RECEIVED,
    (_P, _S.RECEIVED, _E.MARK_REPAIRED): _S.REPAIRED,
    (_P, _S.REPAIRED, _E.SHIP_RETURN): _S.RETURNED,
    (_P, _S.RETURNED, _E.CLOSE): _S.CLOSED,
    (_P, _S.DECLINED, _E.CLOSE): _S.CLOSED,
    **{
        (path, status, _E.CANCEL): _S.CANCELLED
        for path in Path
        for status in (_S.REQUESTED, _S.APPROVED, _S.QUOTED, _S.PAID)
    },
}
"""(path, status, step) → the next status; a step not in the table is refused."""

TERMINAL: frozenset[Status] = frozenset({Status.CLOSED, Status.CANCELLED})

STAFF_STEPS: frozenset[Step] = frozenset(
    {
        Step.APPROVE,
        Step.QUOTE,
        Step.SHIP_REPLACEMENT,
        Step.RECEIVE,
        Step.MARK_REPAIRED,
        Step.SHIP_RETURN,
        Step.CLOSE,
        Step.CANCEL,
    }
)
"""The repair centre's steps (``pay`` is billing's: nobody takes it by hand)."""

CUSTOMER_STEPS: frozenset[Step] = frozenset({Step.PAY, Step.DECLINE, Step.CANCEL})
"""The customer accepts and pays a quote, declines it, or cancels before paying."""

_CUSTOMER_CANCELS: frozenset[Status] = frozenset({Status.REQUESTED, Status.APPROVED, Status.QUOTED})

_SHIPMENT_STEP: Mapping[ShipmentKind, Step | None] = {
    ShipmentKind.REPLACEMENT: Step.SHIP_REPLACEMENT,
    ShipmentKind.RETURN: Step.SHIP_RETURN,
    ShipmentKind.INBOUND: None,
}
_INBOUND_WHILE: Mapping[Path, frozenset[Status]] = {
    Path.WARRANTY: frozenset({Status.APPROVED, Status.REPLACEMENT_SENT}),
    Path.PAID: frozenset({Status.PAID}),
}
_SHIPPED: Mapping[ShipmentKind, tuple[Status, Status]] = {
    ShipmentKind.REPLACEMENT: (Status.REPLACEMENT_SENT, Status.APPROVED),
    ShipmentKind.RETURN: (Status.RETURNED, Status.REPAIRED),
}


def path_of(*, in_warranty: bool) -> Path:
    return Path.WARRANTY if in_warranty else Path.PAID


def initial_status(*, in_warranty: bool, rma_approved: bool) -> Status:
    """An approved RMA of a device in warranty is a replacement approved already."""
    return Status.APPROVED if in_warranty and rma_approved else Status.REQUESTED


def steps(path: Path, status: Status, *, staff: bool) -> list[Step]:
    """The steps the viewer may take now, in the table's order (for pages and the API)."""
    may = STAFF_STEPS if staff else CUSTOMER_STEPS
    found = [
        step
        for (p, s, step) in TRANSITIONS
        if p is path and s is status and step in may
        if staff or step is not Step.CANCEL or status in _CUSTOMER_CANCELS
    ]
    return list(dict.fromkeys(found))


def next_step(path: Path, status: Status, step: Step, *, staff: bool) -> Status:
    """The status after ``step``.

    Raises:
        Forbidden: the step is not the viewer's to take (a customer cannot approve;
            staff cannot pay; a customer cannot cancel after paying).
        InvalidTransition: the repair's status does not allow it.
    """
    to = TRANSITIONS.get((path, status, step))
    if to is None:
        if status in TERMINAL:
            raise InvalidTransition(
                N_("repair is %(status)s: nothing more can happen to it"), status=status.value
            )
        raise InvalidTransition(
            N_("a %(path)s repair that is %(status)s cannot %(step)s"),
            path=path.value,
            status=status.value,
            step=step.value,
        )
    if staff and step not in STAFF_STEPS:
        raise Forbidden(N_("the customer accepts and pays a quote, or declines it"))
    if not staff and (
        step not in CUSTOMER_STEPS or (step is Step.CANCEL and status not in _CUSTOMER_CANCELS)
    ):
        raise Forbidden(
            N_("the repair centre takes this step (%(step)s); ask support"), step=step.value
        )
    return to


def refund_on_cancel(status: Status) -> bool:
    """Cancelling a paid repair gives the payment back (through billing)."""
    return status is Status.PAID


def shipment_step(path: Path, status: Status, kind: ShipmentKind, *, staff: bool) -> Status:
    """The status after adding a shipment of ``kind`` (unchanged for an inbound one).

    Raises:
        Forbidden, InvalidTransition: as :func:`next_step`; an inbound shipment only
            while the old device is awaited.
    """
    step = _SHIPMENT_STEP[kind]
    if step is not None:
        return next_step(path, status, step, staff=staff)
    if status not in _INBOUND_WHILE[path]:
        raise InvalidTransition(
            N_("a repair that is %(status)s awaits no device: no inbound shipment now"),
            status=status.value,
        )
    return status


def check_reship(status: Status, shipment: ShipmentStatus) -> None:
    """A lost shipment may be replaced by a new one while the repair is open and it is active.

    Raises:
        InvalidTransition: the repair is over, or the shipment was reshipped or cancelled.
    """
    if status in TERMINAL:
        raise InvalidTransition(
            N_("repair is %(status)s: nothing more can happen to it"), status=status.value
        )
    if shipment is not ShipmentStatus.ACTIVE:
        raise InvalidTransition(
            N_("the shipment is %(state)s: only an active shipment is reshipped or cancelled"),
            state=shipment.value,
        )


def cancel_shipment(status: Status, kind: ShipmentKind, shipment: ShipmentStatus) -> Status:
    """The repair's status after cancelling a shipment: an outbound one only while the
    status rests on it (then the status goes back a step); an inbound one while it is open.

    Raises:
        InvalidTransition: the repair is over, the shipment not active, or the repair moved on.
    """
    check_reship(status, shipment)
    shipped = _SHIPPED.get(kind)
    if shipped is None:
        return status
    if status is not shipped[0]:
        raise InvalidTransition(
            N_("the %(kind)s shipment cannot be cancelled: the repair is %(status)s"),
            kind=kind.value,
            status=status.value,
        )
    return shipped[1]


def check_replacement_serial(kind: ShipmentKind, serial: str | None, *, device_id: str) -> None:
    """A replacement parcel names the serial of the device in it (a device id: letters,
    digits, ``-`` and ``_``), another device than ``device_id``; other parcels carry the
    repaired device itself and name none.

    Raises:
        InvalidRequest: a replacement without a valid serial of its own, or a serial on
            another kind of parcel.
    """
    if kind is not ShipmentKind.REPLACEMENT:
        if serial is not None:
            raise InvalidRequest(
                N_("only a replacement has a serial of its own: leave it out for a %(kind)s"),
                kind=kind.value,
            )
        return
    if serial is None:
        raise InvalidRequest(N_("give the serial of the replacement device"))
    try:
        check_device_id(serial)
    except TopicError as err:
        raise InvalidRequest(
            N_("a serial is 1 to 64 letters, digits, - and _, not %(serial)s"),
            serial=repr(serial),
        ) from err
    if serial == device_id:
        raise InvalidRequest(
            N_("the replacement is another device: %(serial)s is the one it replaces"),
            serial=serial,
        )


def check_quote(amount_cents: int) -> None:
    """Raises: InvalidRequest: not 1 cent to :data:`MAX_QUOTE_CENTS`."""
    if not 0 < amount_cents <= MAX_QUOTE_CENTS:
        raise InvalidRequest(
            N_("a quote is 1 to %(most)s cents, not %(cents)s"),
            most=MAX_QUOTE_CENTS,
            cents=amount_cents,
        )


# warranty -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Warranty:
    """The device's warranty: installed at, ends at (exclusive), and whether ``now`` is in it."""

    installed_at: int
    ends_at: int
    in_warranty: bool


def add_months(epoch: int, months: int) -> int:
    """``epoch`` plus ``months`` calendar months (UTC; the 31st becomes the month's last day)."""
    when = datetime.fromtimestamp(epoch, UTC)
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    last_day = (following - datetime(year, month, 1, tzinfo=UTC)).days
    moved = when.replace(year=year, month=month, day=min(when.day, last_day))
    return int(moved.timestamp())


def warranty(*, installed_at: int, term_months: int, now: int) -> Warranty:
    """In warranty from ``installed_at`` (the device's registration) for ``term_months``
    months (0: never)."""
    if term_months < 0:
        raise ValueError(f"a warranty term is 0 or more months, not {term_months}")
    ends_at = add_months(installed_at, term_months)
    return Warranty(installed_at=installed_at, ends_at=ends_at, in_warranty=now < ends_at)
