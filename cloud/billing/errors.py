"""Typed errors of orders and payments: the billing branch of the tree in :mod:`cloud.errors`."""

from __future__ import annotations

from cloud.errors import Conflict, InvalidRequest, NotFound
from protocol.errors import TransportError

__all__ = [
    "BadOrderRequest",
    "ChargeNotSettled",
    "ChargeSettled",
    "IdempotencyConflict",
    "NothingToResend",
    "OrderStateConflict",
    "PartialVoid",
    "PaymentProviderError",
    "RefundFailed",
    "RefundTooLarge",
    "UnknownCharge",
    "UnknownOrder",
    "UnknownOrderLine",
    "VoidFailed",
]


class UnknownOrder(NotFound):
    """No order with this id (or not one the caller may see)."""


class UnknownOrderLine(NotFound):
    """No line with this id on the order."""


class OrderStateConflict(Conflict):
    """The order's status does not allow this action (e.g. pay a cancelled order)."""


class IdempotencyConflict(Conflict):
    """An idempotency key already used for a different order."""


class NothingToResend(Conflict):
    """An order mail that cannot be resent: nobody to send it to, or nothing happened yet."""


class ChargeSettled(Conflict):
    """A void of a settled charge: refund it instead."""


class ChargeNotSettled(Conflict):
    """A refund of a charge not settled yet: void it instead."""


class BadOrderRequest(InvalidRequest):
    """An order, payment or reversal that can never be valid as asked (HTTP 422)."""


class PartialVoid(BadOrderRequest):
    """A void of less than the whole charge; there is no partial void (refund once settled)."""


class RefundTooLarge(BadOrderRequest):
    """A refund above what is left of the charge."""


class PaymentProviderError(TransportError):
    """The payment provider did not do what was asked (down, refused, failed)."""


class UnknownCharge(PaymentProviderError):
    """The provider has no charge with this id."""


class VoidFailed(PaymentProviderError):
    """The provider failed to void a charge."""


class RefundFailed(PaymentProviderError):
    """The provider failed to refund a charge; the refund is queued for retries."""
