"""Notifications: e-mail through a transactional outbox.

Owns the outbox rows, the texts of each kind of mail, the sender job with
its retry schedule, and the SMTP adapter.

- ``tables``       the outbox rows and their queries
- ``outbox`` ``templates``  what to send
- ``mailer``       the ``Mailer`` boundary and the SMTP adapter
- ``sender``       the sender job
- ``routes``       ``/notifications``
"""

__all__: list[str] = []
