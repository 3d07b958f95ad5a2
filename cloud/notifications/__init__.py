"""Notifications: e-mail through a transactional outbox.

Owns the outbox rows, the sender job with its retry schedule, and the SMTP
adapter. It sends what a feature composed: the texts and attachments of
billing's mails are :mod:`cloud.billing.notices`.

- ``tables``       the outbox rows
- ``queries``      add, claim what is due, settle, inside the caller's session
- ``outbox``       queue a mail in the caller's transaction
- ``mailer``       the ``Mailer`` boundary and the SMTP adapter
- ``sender``       the sender job
- ``routes``       ``/notifications``
"""

__all__: list[str] = []
