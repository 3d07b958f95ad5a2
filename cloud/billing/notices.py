"""The texts of billing's and subscriptions' mails: pure functions from facts to a :class:`Notice`.

Callers render, then enqueue in their own transaction::

    notice = notices.charge_failed(order_number=..., ...)
    enqueue(tx, to=[contact.email], now=now, dedupe_key=..., **notice.fields())

:func:`enqueue_invoice` does both for invoices, attaching the PDF: billing
composes the mail and its attachment, notifications only queues and sends.
Subjects start with the thing the reader must act on; bodies say what happened, what
happens next and by when, in plain text. Dates are UTC calendar dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from cloud.billing.invoices import (
    Invoice,
    format_date,
    format_money,
    invoice_filename,
    render_invoice,
)
from cloud.notifications.outbox import enqueue

__all__ = [
    "KINDS",
    "Notice",
    "ServiceLine",
    "charge_failed",
    "charge_retry_failed",
    "enqueue_invoice",
    "invoice",
    "payment_received",
    "refund_failed",
    "refund_made",
    "renewal_notice",
    "subscription_expired",
]

KINDS = (
    "renewal_notice",
    "charge_failed",
    "charge_retry_failed",
    "subscription_expired",
    "refund_failed",
    "invoice",
    "payment_received",
    "refund",
)

_SIGNATURE = (
    "\n\n-- \nEntitle billing. This message was sent automatically; replies are not read.\n"
)


@dataclass(frozen=True, slots=True)
class Notice:
    """A rendered notification: its kind, subject line and plain-text body."""

    kind: str
    subject: str
    body: str

    def fields(self) -> dict[str, str]:
        """``kind``, ``subject`` and ``body`` as keyword arguments of :func:`enqueue`."""
        return {"kind": self.kind, "subject": self.subject, "body": self.body}


@dataclass(frozen=True, slots=True)
class ServiceLine:
    """A service a notice is about: code, name, and the date it is paid through."""

    product_code: str
    description: str
    until: int


def _services(lines: Sequence[ServiceLine]) -> str:
    return "\n".join(
        f"  - {line.description} ({line.product_code}), paid through {format_date(line.until)}"
        for line in lines
    )


def renewal_notice(
    *,
    installation: str,
    services: Sequence[ServiceLine],
    renews_on: int,
    amount_cents: int,
    currency: str,
    pay_with: str,
) -> Notice:
    """Two months before expiry: what renews, when, for how much, and how to stop it."""
    how = (
        "the card on file will be charged"
        if pay_with == "card"
        else "an invoice will be sent to you"
    )
    body = (
        f"The subscriptions of installation {installation} renew automatically on "
        f"{format_date(renews_on)}:\n\n{_services(services)}\n\n"
        f"On that date {how} for {format_money(amount_cents, currency)}.\n\n"
        "Nothing to do if you want to keep them. To stop a renewal, deactivate the "
        "subscription before that date; the service keeps running until its end date."
    )
    return Notice(
        "renewal_notice",
        f"Renewal on {format_date(renews_on)}: {installation}",
        body + _SIGNATURE,
    )


def charge_failed(
    *,
    installation: str,
    order_number: str,
    amount_cents: int,
    currency: str,
    reason: str,
    next_retry_at: int | None,
    expires_at: int,
) -> Notice:
    """The renewal charge was declined (or timed out): when we retry, when service stops."""
    retry = (
        f"We will try again on {format_date(next_retry_at)}."
        if next_retry_at is not None
        else "We will not retry automatically."
    )
    body = (
        f"We could not charge {format_money(amount_cents, currency)} for the renewal of "
        f"installation {installation} (order {order_number}): {reason}.\n\n"
        f"{retry} Please check or update the card on file. The services keep running "
        f"until {format_date(expires_at)} and stop then if the renewal is still unpaid."
    )
    return Notice(
        "charge_failed",
        f"Action needed: payment failed for {installation} (order {order_number})",
        body + _SIGNATURE,
    )


def charge_retry_failed(
    *,
    installation: str,
    order_number: str,
    amount_cents: int,
    currency: str,
    attempt: int,
    next_retry_at: int | None,
    expires_at: int,
) -> Notice:
    """A retry of the renewal charge failed too; says whether another one follows."""
    if next_retry_at is not None:
        then = f"We will try once more on {format_date(next_retry_at)}."
    else:
        then = "That was the last automatic attempt."
    body = (
        f"Attempt {attempt} to charge {format_money(amount_cents, currency)} for the renewal "
        f"of installation {installation} (order {order_number}) failed. {then}\n\n"
        f"Unless the renewal is paid by {format_date(expires_at)}, the services stop on "
        "that date. Update the card on file or pay the order at checkout."
    )
    return Notice(
        "charge_retry_failed",
        f"Action needed: payment retry failed for {installation} (order {order_number})",
        body + _SIGNATURE,
    )


def subscription_expired(
    *, installation: str, services: Sequence[ServiceLine], expired_at: int
) -> Notice:
    """Unpaid at expiry: the services stopped; how to get them back."""
    body = (
        f"The renewal of installation {installation} was not paid, so these services "
        f"stopped on {format_date(expired_at)}:\n\n{_services(services)}\n\n"
        "Reactivate them at any time; whoever reactivates becomes the purchaser."
    )
    return Notice("subscription_expired", f"Services stopped: {installation}", body + _SIGNATURE)


def refund_failed(
    *,
    order_number: str,
    amount_cents: int,
    currency: str,
    charge_id: str | None,
    attempts: int,
    last_error: str,
) -> Notice:
    """To the order's notify list: a refund failed every retry and needs a person."""
    body = (
        f"The refund of {format_money(amount_cents, currency)} for order {order_number} "
        f"(charge {charge_id or 'unknown'}) failed {attempts} time(s) and will not be "
        f"retried automatically.\n\nLast error: {last_error}\n\n"
        "Please refund it through the payment provider's dashboard and record it on the order."
    )
    return Notice(
        "refund_failed",
        f"Refund failed: order {order_number}, {format_money(amount_cents, currency)}",
        body + _SIGNATURE,
    )


def invoice(bill: Invoice) -> Notice:
    """The mail that carries an invoice PDF."""
    total = format_money(bill.total_cents, bill.currency)
    if bill.paid_at is not None and bill.card_last4:
        state = (
            f"It was paid by card ending {bill.card_last4} on {format_date(bill.paid_at)}; "
            "no action is needed."
        )
    elif bill.paid_at is not None:
        state = f"It was paid on {format_date(bill.paid_at)}; no action is needed."
    elif bill.due_at is not None:
        state = f"Please pay it by {format_date(bill.due_at)}."
    else:
        state = "Please pay it on receipt."
    lines = "\n".join(
        f"  - {line.description} ({line.product_code}), {line.months} month(s): "
        f"{line.quantity} x {format_money(line.unit, bill.currency)} = "
        f"{format_money(line.amount_cents, bill.currency)}"
        for line in bill.lines
    )
    body = (
        f"Attached is invoice {bill.number} for order {bill.order_number}, dated "
        f"{format_date(bill.issued_at)}, total {total}.\n\n{lines}\n\n{state}"
    )
    return Notice("invoice", f"Invoice {bill.number} ({total})", body + _SIGNATURE)


def refund_made(
    *,
    order_number: str,
    amount_cents: int,
    currency: str,
    voided: bool,
    card_last4: str | None,
    at: int,
) -> Notice:
    """To the order's notify list: money was given back (a void or a refund)."""
    card = f"card ending {card_last4}" if card_last4 else "the card it was paid with"
    if voided:
        what = (
            f"The charge of {format_money(amount_cents, currency)} for order {order_number} "
            f"was cancelled on {format_date(at)} before it was settled: it will not appear "
            f"on the statement of {card}, or only as a pending charge that drops off."
        )
    else:
        what = (
            f"{format_money(amount_cents, currency)} of order {order_number} was refunded to "
            f"{card} on {format_date(at)}. Banks take up to ten days to show it."
        )
    body = f"{what}\n\nNothing to do: this message is your record of it."
    subject = f"Refund: order {order_number}, {format_money(amount_cents, currency)}"
    return Notice("refund", subject, body + _SIGNATURE)


def payment_received(
    *,
    installation: str,
    order_number: str,
    amount_cents: int,
    currency: str,
    paid_at: int,
) -> Notice:
    """A payment (checkout or renewal charge) went through."""
    body = (
        f"We received {format_money(amount_cents, currency)} for order {order_number} "
        f"(installation {installation}) on {format_date(paid_at)}. Thank you.\n\n"
        "The invoice follows in a separate message."
    )
    return Notice(
        "payment_received",
        f"Payment received: order {order_number}",
        body + _SIGNATURE,
    )


def enqueue_invoice(session: Session, *, bill: Invoice, to: Sequence[str], now: int) -> None:
    """Render the invoice PDF and queue it, once per invoice number (``invoice:<number>``)."""
    notice = invoice(bill)
    enqueue(
        session,
        to=to,
        now=now,
        attachments=[(invoice_filename(bill), "application/pdf", render_invoice(bill))],
        dedupe_key=f"invoice:{bill.number}",
        **notice.fields(),
    )
