"""Tickets: support cases, their messages, devices, RMA approvals, action tasks and
attachments, as the vendor's manual runs them.

- ``rules``        stages, statuses, owners, categories (support-only ones), SLA per line,
                   the third line, task moves (pure); ``rules.files`` which attachment is
                   accepted (sniffed type, size); ``rules.precheck`` the check before a report
- ``tables``       the rows
- ``queries``      the reads (board, attached devices, self-tests, contacts) and the job's UPDATEs
- ``service``      open, answer, escalate, re-categorise, assign, tasks, attachments, approve an
                   RMA, close; the board; mails through the outbox; audit rows
- ``notices``      the texts of the mails
- ``storage``      attachment files on disk, content-addressed, written atomically
- ``jobs``         auto-close after suggest-close (mailed, audited), SLA breach flags
- ``deps``         the service a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/tickets``
- ``pages``        the support desk: ``/tickets``, ``/tickets/new``, ``/tickets/{id}``
"""

__all__: list[str] = []
