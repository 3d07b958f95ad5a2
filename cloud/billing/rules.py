"""The order and transaction lifecycle as pure rules: statuses, transitions, amounts, retries.

No I/O and no clock: every decision takes ``now`` or the stored facts and
returns a value or raises a typed error from :mod:`cloud.billing.errors`.

Order statuses are the vendors' manual's own words::

    Processing ──pay/charge──▶ Succeed ──void──▶ Cancel
        │  ▲                     ▲
        │  └── pay again ─ Failed│
        │                   ▲    │
        ├──▶ Time out ──▶ System Processing (reconciling with the provider)
        └──▶ Cancel (unpaid)

* ``Time out``: the provider did not answer a charge in time; nobody knows
  whether money moved. Reconciliation moves it to ``System Processing`` and
  asks the provider by the charge's idempotency key: charged → ``Succeed``,
  never charged or declined → ``Failed``. A charge still ``Processing`` after
  :data:`STALE_CHARGE_S` (a worker died mid-charge) is reconciled the same way.
* A void cancels the whole unsettled charge (order → ``Cancel``); a refund
  returns part or all of a settled one (the order stays ``Succeed``; the
  refund is a transaction of its own).
* A failed refund is retried once a day (:data:`REFUND_RETRY_INTERVAL_S`)
  :data:`REFUND_RETRIES` times; when the last retry fails the order's notify
  list is emailed and the refund is left for a person.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from cloud.billing.errors import (
    BadOrderRequest,
    ChargeNotSettled,
    ChargeSettled,
    OrderStateConflict,
    PartialVoid,
    RefundTooLarge,
)
from cloud.errors import N_

__all__ = [
    "MAX_LINES",
    "MAX_ORDER_CENTS",
    "REFUND_RETRIES",
    "REFUND_RETRY_INTERVAL_S",
    "STALE_CHARGE_S",
    "OrderKind",
    "OrderLine",
    "OrderStatus",
    "PayWith",
    "TxnType",
    "MAX_QUANTITY",
    "check_lines",
    "check_transition",
    "choose_reversal",
    "hidden_filter",
    "line_amount",
    "line_installation",
    "next_refund_retry",
    "order_number",
    "plan_refund",
    "plan_void",
    "status_after_charge",
]

MAX_LINES = 200  # a consolidated renewal: one line per subscription (an invoice holds 200)
MAX_ORDER_CENTS = 10**10  # 100 million in the currency: far above any real order
MAX_MONTHS = 240
MAX_QUANTITY = 10_000
REFUND_RETRY_INTERVAL_S = 86_400
REFUND_RETRIES = 3
STALE_CHARGE_S = 600
_PRODUCT_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class OrderStatus(StrEnum):
    """Status of an order and of each of its transactions (the manual's words)."""

    PROCESSING = "Processing"
    SUCCEED = "Succeed"
    FAILED = "Failed"
    TIME_OUT = "Time out"
    CANCEL = "Cancel"
    SYSTEM_PROCESSING = "System Processing"

    # lower-case aliases, the spelling of the work-split contract
    processing = "Processing"
    succeed = "Succeed"
    failed = "Failed"
    time_out = "Time out"
    cancel = "Cancel"
    system_processing = "System Processing"


class OrderKind(StrEnum):
    PURCHASE = "purchase"
    RENEWAL = "renewal"
    REACTIVATION = "reactivation"
    REPAIR = "repair"  # a repair's quote (cloud.repairs)


class PayWith(StrEnum):
    CARD = "card"
    INVOICE = "invoice"


class TxnType(StrEnum):
    CHARGE = "charge"
    VOID = "void"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One product on an order: ``months`` of ``product_code`` for ``amount_cents``.

    ``quantity`` × ``unit_cents`` is ``amount_cents`` (:func:`check_lines` checks it);
    without ``unit_cents`` the line is one unit of ``amount_cents``. ``installation_id``:
    the installation it is for (default: the order's).
    """

    product_code: str
    description: str
    months: int
    amount_cents: int
    quantity: int = 1
    unit_cents: int | None = None
    installation_id: str | None = None

    @property
    def unit(self) -> int:
        """The price of one unit in cents."""
        return self.amount_cents if self.unit_cents is None else self.unit_cents


_S = OrderStatus
_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    _S.PROCESSING: frozenset({_S.SUCCEED, _S.FAILED, _S.TIME_OUT, _S.CANCEL}),
    _S.FAILED: frozenset({_S.PROCESSING, _S.CANCEL}),
    _S.TIME_OUT: frozenset({_S.SYSTEM_PROCESSING}),
    _S.SYSTEM_PROCESSING: frozenset({_S.SUCCEED, _S.FAILED}),
    _S.SUCCEED: frozenset({_S.CANCEL}),
    _S.CANCEL: frozenset(),
}


def check_transition(before: OrderStatus, after: OrderStatus) -> None:
    """Refuse a status change the lifecycle does not have.

    Raises:
        OrderStateConflict: ``before`` cannot become ``after``.
    """
    if after not in _TRANSITIONS[before]:
        raise OrderStateConflict(
            N_("an order in status '%(before)s' cannot become '%(after)s'"),
            before=before,
            after=after,
        )


def order_number(order_id: int, *, now: int) -> str:
    """The human-readable number, ``EN-<year>-<id, 6+ digits>``: unique because the id is."""
    year = datetime.fromtimestamp(now, UTC).year
    return f"EN-{year}-{order_id:06d}"


def check_lines(lines: Sequence[OrderLine]) -> int:
    """Validate the lines of a new order and return its total in cents.

    Raises:
        BadOrderRequest: no lines, too many, a bad product code, negative
            amounts or months, or a total over :data:`MAX_ORDER_CENTS`.
    """
    if not lines:
        raise BadOrderRequest(N_("an order needs at least one line"))
    if len(lines) > MAX_LINES:
        raise BadOrderRequest(N_("an order has at most %(most)s lines"), most=MAX_LINES)
    total = 0
    for line in lines:
        if not _PRODUCT_CODE.match(line.product_code):
            raise BadOrderRequest(N_("bad product code %(code)s"), code=repr(line.product_code))
        if not 0 <= line.months <= MAX_MONTHS:
            raise BadOrderRequest(
                N_("months must be 0-%(most)s, not %(months)s"), most=MAX_MONTHS, months=line.months
            )
        if line.amount_cents < 0:
            raise BadOrderRequest(N_("a line amount cannot be negative"))
        if len(line.description) > 200:
            raise BadOrderRequest(N_("a line description has at most 200 characters"))
        line_amount(quantity=line.quantity, unit_cents=line.unit, amount_cents=line.amount_cents)
        total += line.amount_cents
    if total > MAX_ORDER_CENTS:
        raise BadOrderRequest(N_("an order total is at most %(most)s cents"), most=MAX_ORDER_CENTS)
    return total


def line_amount(*, quantity: int, unit_cents: int, amount_cents: int | None = None) -> int:
    """A line's amount, ``quantity`` × ``unit_cents``; checked against ``amount_cents`` if given.

    Raises:
        BadOrderRequest: a quantity outside 1-:data:`MAX_QUANTITY`, a negative unit price,
            or an amount that is not quantity × unit price.
    """
    if not 1 <= quantity <= MAX_QUANTITY:
        raise BadOrderRequest(
            N_("a quantity must be 1-%(most)s, not %(quantity)s"),
            most=MAX_QUANTITY,
            quantity=quantity,
        )
    if unit_cents < 0:
        raise BadOrderRequest(N_("a unit price cannot be negative"))
    total = quantity * unit_cents
    if amount_cents is not None and amount_cents != total:
        raise BadOrderRequest(
            N_(
                "a line amount of %(amount)s cents is not %(quantity)s × %(unit)s cents "
                "(quantity × unit price)"
            ),
            amount=amount_cents,
            quantity=quantity,
            unit=unit_cents,
        )
    return total


def line_installation(line_installation_id: str | None, order_installation_id: str) -> str:
    """The installation an order line is for: its own; lines older than line installations
    (NULL) are for the order's."""
    return line_installation_id or order_installation_id


def hidden_filter(*, staff: bool, show_hidden: bool) -> bool | None:
    """Which orders a history lists, by whether they are hidden: ``None`` all, ``False``
    not hidden, ``True`` hidden only.

    A customer's history leaves out what they hid (Akuvox's "delete"), unless they ask
    for the hidden ones (to show them again); staff see everything, marked hidden, as
    the books and the audit log do.
    """
    if show_hidden:
        return True
    return None if staff else False


def choose_reversal(
    *, charge_cents: int, refunded_cents: int, requested_cents: int | None, settled: bool
) -> tuple[TxnType, int]:
    """What a refund request does: void an unsettled charge in full, refund a settled one.

    The processor's manual: "tries a void first, then a refund". An unsettled
    charge cannot be partly given back (there is no partial void), so a
    partial amount waits until the charge settles.

    Raises:
        ChargeNotSettled: a part of an unsettled charge (409: it can be refunded once settled).
        OrderStateConflict: an unsettled charge with a refund under way.
        RefundTooLarge, BadOrderRequest: as :func:`plan_refund` for a settled charge.
    """
    if settled:
        return TxnType.REFUND, plan_refund(
            charge_cents=charge_cents,
            refunded_cents=refunded_cents,
            requested_cents=requested_cents,
            settled=True,
        )
    if refunded_cents:
        raise OrderStateConflict(N_("the charge is being refunded: it cannot be voided"))
    if requested_cents is not None and requested_cents != charge_cents:
        # 409, not 422: the same request succeeds once the charge has settled
        raise ChargeNotSettled(
            N_(
                "the charge of %(charge)s cents has not settled, so it can only be given back "
                "whole (a void), not %(requested)s; refund part of it once it has settled"
            ),
            charge=charge_cents,
            requested=requested_cents,
        )
    return TxnType.VOID, charge_cents


def status_after_charge(charge_status: str) -> OrderStatus:
    """Order status for a provider's answer to a charge."""
    return {
        "succeeded": _S.SUCCEED,
        "declined": _S.FAILED,
        "timed_out": _S.TIME_OUT,
    }[charge_status]


def plan_void(*, charge_cents: int, requested_cents: int | None, settled: bool) -> int:
    """The amount to void: always the whole charge.

    Raises:
        ChargeSettled: the charge settled; refund it instead.
        PartialVoid: ``requested_cents`` is not the whole charge.
    """
    if requested_cents is not None and requested_cents != charge_cents:
        raise PartialVoid(
            N_(
                "a void cancels the whole charge of %(charge)s cents, not %(requested)s; "
                "refund part of it once it has settled"
            ),
            charge=charge_cents,
            requested=requested_cents,
        )
    if settled:
        raise ChargeSettled(N_("the charge has settled and cannot be voided: refund it instead"))
    return charge_cents


def plan_refund(
    *, charge_cents: int, refunded_cents: int, requested_cents: int | None, settled: bool
) -> int:
    """The amount to refund: ``requested_cents`` or what is left of the charge.

    ``refunded_cents`` counts refunds done, pending and queued for retries.

    Raises:
        ChargeNotSettled: the charge has not settled; void it instead.
        RefundTooLarge: more than is left (or nothing is left).
        BadOrderRequest: a refund of zero or fewer cents.
    """
    if not settled:
        raise ChargeNotSettled(N_("the charge has not settled yet: void it instead"))
    left = charge_cents - refunded_cents
    amount = left if requested_cents is None else requested_cents
    if amount <= 0:
        if requested_cents is None:
            raise RefundTooLarge(N_("the charge has been refunded in full already"))
        raise BadOrderRequest(N_("a refund must be of at least 1 cent"))
    if amount > left:
        raise RefundTooLarge(
            N_("only %(left)s of %(charge)s cents are left to refund"),
            left=left,
            charge=charge_cents,
        )
    return amount


def next_refund_retry(*, retries_done: int, now: int) -> int | None:
    """When to retry a failed refund next, or None when the retries are used up."""
    if retries_done >= REFUND_RETRIES:
        return None
    return now + REFUND_RETRY_INTERVAL_S
