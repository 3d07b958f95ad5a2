"""The texts of tickets' mails: pure functions from facts to subject and body, translated.

The service queues them through the notifications outbox in the transaction that made
the change (:func:`cloud.notifications.outbox.enqueue`): a new message goes to the other
side and the people in copy, a stage or status change and support's proposal to close
go to the customer's side and the people in copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cloud.errors import N_

__all__ = [
    "STAGE_NAMES",
    "STATUS_NAMES",
    "Gettext",
    "Mail",
    "message_mail",
    "status_mail",
    "suggest_close_mail",
]

Gettext = Callable[[str], str]

_MAX_QUOTE = 4000


@dataclass(frozen=True, slots=True)
class Mail:
    kind: str
    subject: str
    body: str


def _footer(link: str, _: Gettext) -> str:
    return (
        "\n\n"
        + _("Open the ticket: %(link)s") % {"link": link}
        + "\n\n-- \n"
        + _("Entitle support. Answer on the ticket page; replies to this mail are not read.")
        + "\n"
    )


def message_mail(
    *, ticket_id: int, subject: str, body: str, from_support: bool, link: str, _: Gettext
) -> Mail:
    """A new message on a ticket, quoted."""
    who = _("Support") if from_support else _("The customer")
    quoted = body if len(body) <= _MAX_QUOTE else body[:_MAX_QUOTE] + " [...]"
    return Mail(
        "ticket_message",
        _("[Ticket #%(id)s] New message: %(subject)s") % {"id": ticket_id, "subject": subject},
        _("%(who)s wrote on ticket #%(id)s:") % {"who": who, "id": ticket_id}
        + "\n\n"
        + quoted
        + _footer(link, _),
    )


def status_mail(
    *, ticket_id: int, subject: str, stage: str, status: str, link: str, _: Gettext
) -> Mail:
    """The ticket moved to another stage or status (names already translated)."""
    return Mail(
        "ticket_status",
        _("[Ticket #%(id)s] Now %(stage)s: %(subject)s")
        % {"id": ticket_id, "stage": stage, "subject": subject},
        _("Ticket #%(id)s is now in %(stage)s, status %(status)s.")
        % {"id": ticket_id, "stage": stage, "status": status}
        + _footer(link, _),
    )


def suggest_close_mail(*, ticket_id: int, subject: str, days: int, link: str, _: Gettext) -> Mail:
    """Support proposes to close: the customer confirms, or answers to keep it open."""
    return Mail(
        "ticket_suggest_close",
        _("[Ticket #%(id)s] Solved? We propose to close: %(subject)s")
        % {"id": ticket_id, "subject": subject},
        _(
            "Support believes ticket #%(id)s is solved and proposes to close it. Close it on "
            "the ticket page if you agree, or answer there if the problem remains. Without "
            "an answer it closes by itself in %(days)s days."
        )
        % {"id": ticket_id, "days": days}
        + _footer(link, _),
    )


STAGE_NAMES: dict[str, str] = {
    "first_line": N_("First line"),
    "second_line": N_("Second line"),
    "third_line": N_("Third line"),
    "suggest_close": N_("Suggested to close"),
    "closed": N_("Closed"),
}
STATUS_NAMES: dict[str, str] = {
    "open": N_("open"),
    "recheck_approved": N_("recheck approved"),
    "hard_to_config": N_("hard to configure"),
    "suggested_close": N_("suggested close"),
    "closed": N_("closed"),
}
