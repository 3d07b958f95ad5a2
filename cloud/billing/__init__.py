"""Billing: orders, payments, refunds and invoices.

Owns placing orders, checkout by card or invoice, voids and refunds with
their daily retries, reconciling charges whose answer was lost, and the
invoice PDF, and the texts of its mails.

- ``rules``        statuses, transitions, amounts, the retry schedule (pure)
- ``errors``       the billing branch of the error tree
- ``tables``       the rows: orders, lines, transactions, refund retries
- ``queries``      the SQL, inside the caller's session
- ``payments``     the ``PaymentProvider`` boundary and its sandbox test double
- ``orders`` ``reconcile`` ``refunds`` ``invoices``
- ``notices``      the texts of billing's mails, and the invoice mail with its PDF
- ``jobs``         the refund-retry and reconcile jobs
- ``deps``         the services a route depends on
- ``routes``       ``/orders``, ``/invoices``
"""

__all__: list[str] = []
