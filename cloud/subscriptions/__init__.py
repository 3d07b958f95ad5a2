"""Subscriptions: the vendors' renewal rules and the service that applies them.

Owns the catalogue of plans, the calendar and lifecycle rules (purchase,
renew, deactivate, reactivate, grace), the subscription rows and their order
links, settlement of the orders they place, and the renewal job.

- ``rules``        calendar, catalogue, lifecycle (pure)
- ``tables``       the rows
- ``queries``      their reads and writes, inside the caller's session
- ``service`` ``settlement`` ``payer`` ``views``
- ``effects``      a transition's audit entry, grants and e-mails, for one or a batch
- ``sweep``        the renewal job's set-based batch
- ``jobs``         the renewal job
- ``deps``         the service a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/subscriptions``
"""

__all__: list[str] = []
