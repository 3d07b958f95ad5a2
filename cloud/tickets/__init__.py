"""Tickets: support cases, their messages, devices and RMA approvals.

- ``rules``        stages, owners, categories and their transitions (pure)
- ``tables``       the rows
- ``queries``      the reads (board, attached devices, self-tests) and the job's UPDATEs
- ``service``      open, answer, escalate, approve an RMA, close; the board
- ``jobs``         auto-close after suggest-close, SLA breach flags
- ``deps``         the service a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/tickets``
- ``pages``        the support desk: ``/tickets``, ``/tickets/new``, ``/tickets/{id}``
"""

__all__: list[str] = []
