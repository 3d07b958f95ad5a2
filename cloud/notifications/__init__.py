"""E-mail notifications: a transactional outbox, a sender job, and the texts of each kind.

Producers (subscriptions, billing) call :func:`enqueue` inside their own
transaction with a text made by a pure ``render_*`` function from
:mod:`cloud.notifications.templates`; the :class:`OutboxSender` job sends due
rows through a :class:`Mailer` (:class:`SmtpMailer` in production).

Errors::

    TransportError (protocol.errors)
    └── MailUnavailable      the mail server could not be reached or said "try later" (retried)
    CloudError (cloud.errors)
    └── MailRejected         the server refused the message for good (not retried)
"""

from cloud.notifications import templates
from cloud.notifications.mailer import Mailer, MailRejected, MailUnavailable, SmtpMailer
from cloud.notifications.outbox import build_message, compose, enqueue
from cloud.notifications.sender import OutboxReport, OutboxSender, retry_delay
from cloud.notifications.templates import Notice, enqueue_invoice

__all__ = [
    "MailRejected",
    "MailUnavailable",
    "Mailer",
    "Notice",
    "OutboxReport",
    "OutboxSender",
    "SmtpMailer",
    "build_message",
    "compose",
    "enqueue",
    "enqueue_invoice",
    "retry_delay",
    "templates",
]
