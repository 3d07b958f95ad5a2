"""Tickets: support cases, their messages, devices and RMA approvals.

- ``rules``        stages, owners, categories and their transitions (pure)
- ``tables``       the rows
- ``service``      open, answer, escalate, approve an RMA, close
- ``deps``         the service a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/tickets``
"""

__all__: list[str] = []
