"""The mails accounts sends, and the port it queues them through.

Accounts sits below notifications in cloud's layers, so it does not import
the outbox: the app hands :class:`AccountService` the outbox's ``enqueue``
(:func:`cloud.notifications.outbox.enqueue`), which fits :class:`MailQueue`,
and the mail is queued in the transaction that made the link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.orm import Session

from cloud.accounts.resets import IssuedReset

__all__ = ["Gettext", "MailQueue", "reset_mail"]

Gettext = Callable[[str], str]


class MailQueue(Protocol):
    """Queues an e-mail in the caller's transaction (the notification outbox)."""

    def __call__(
        self,
        session: Session,
        *,
        kind: str,
        to: Sequence[str],
        subject: str,
        body: str,
        now: int,
        dedupe_key: str | None = None,
    ) -> None: ...


def reset_mail(issued: IssuedReset, *, link: str, ttl_s: int, _: Gettext) -> tuple[str, str]:
    """Subject and plain-text body of a forgotten-password mail, in the user's language."""
    minutes = max(1, ttl_s // 60)
    subject = _("Set a new Entitle password")
    body = "\n\n".join(
        [
            _("Hello %(name)s,") % {"name": issued.name},
            _(
                "Someone, hopefully you, asked to set a new password for the Entitle account "
                "%(email)s. Open this link to choose one:"
            )
            % {"email": issued.email},
            link,
            _(
                "The link works once, for %(minutes)d minutes. Asking again makes a new link "
                "and this one stops working."
            )
            % {"minutes": minutes},
            _(
                "If you did not ask for this, ignore this mail: your password stays as it is. "
                "Setting a new password signs you out everywhere."
            ),
        ]
    )
    return subject, body + "\n"
