"""Orders and payments: place orders, check out by card or invoice, void, refund, retry.

Modules (the service modules are imported by name, so that the store can
import the lifecycle without a cycle):

- :mod:`cloud.billing.lifecycle`  pure rules: statuses, transitions, amounts, retry schedule
- :mod:`cloud.billing.payments`   the ``PaymentProvider`` boundary and its sandbox test double
- :mod:`cloud.billing.orders`     :class:`~cloud.billing.orders.Billing`: place, pay, cancel
- :mod:`cloud.billing.reconcile`  charges whose answer was lost; on-paid callbacks to redo
- :mod:`cloud.billing.refunds`    voids, refunds and the daily retry of failed refunds
- :mod:`cloud.billing.jobs`       the refund-retry and payment-reconcile jobs
- :mod:`cloud.billing.repository` the SQL, inside the caller's session

Errors::

    CloudError (cloud.errors)
    ├── NotFound
    │   └── UnknownOrder
    ├── Conflict
    │   ├── OrderStateConflict   the order's status does not allow this (pay a paid order)
    │   ├── IdempotencyConflict  a key reused for a different order
    │   ├── ChargeSettled        void refused: refund instead
    │   └── ChargeNotSettled     refund refused: void instead
    └── InvalidRequest
        └── BadOrderRequest      never valid as asked (HTTP 422)
            ├── PartialVoid      a void is of the whole charge
            └── RefundTooLarge   more than is left of the charge
    TransportError (protocol.errors)
    └── PaymentProviderError     the provider failed (HTTP 502)
        ├── UnknownCharge
        ├── VoidFailed
        └── RefundFailed         queued for daily retries
"""

from cloud.billing.errors import (
    BadOrderRequest,
    ChargeNotSettled,
    ChargeSettled,
    IdempotencyConflict,
    OrderStateConflict,
    PartialVoid,
    PaymentProviderError,
    RefundFailed,
    RefundTooLarge,
    UnknownCharge,
    UnknownOrder,
    VoidFailed,
)
from cloud.billing.lifecycle import OrderKind, OrderLine, OrderStatus, PayWith, TxnType
from cloud.billing.payments import Charge, PaymentProvider, SandboxPaymentProvider

__all__ = [
    "BadOrderRequest",
    "Charge",
    "ChargeNotSettled",
    "ChargeSettled",
    "IdempotencyConflict",
    "OrderKind",
    "OrderLine",
    "OrderStateConflict",
    "OrderStatus",
    "PartialVoid",
    "PayWith",
    "PaymentProvider",
    "PaymentProviderError",
    "RefundFailed",
    "RefundTooLarge",
    "SandboxPaymentProvider",
    "TxnType",
    "UnknownCharge",
    "UnknownOrder",
    "VoidFailed",
]
