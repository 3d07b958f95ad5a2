"""Putting e-mails in the outbox (in the caller's transaction) and building them to send.

:func:`enqueue` checks everything that could make the message unsendable or
let one field spill into another (a line break in a subject or address is a
header injection) before the row is written, so a queued notification is
always one the sender can build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

from sqlalchemy.orm import Session

from cloud.notifications.queries import Attachment, OutboxMessage, add_notification

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_BODY_CHARS",
    "MAX_RECIPIENTS",
    "build_message",
    "compose",
    "enqueue",
    "fill",
]

MAX_RECIPIENTS = 50
MAX_BODY_CHARS = 200_000
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # all attachments of one message together
_MAX_SUBJECT = 300
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")
# deliberately plain: one @, no spaces, quotes, angle brackets or line breaks
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}")
_CONTENT_TYPE = re.compile(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,58}")
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,199}")


def enqueue(
    session: Session,
    *,
    kind: str,
    to: Sequence[str],
    subject: str,
    body: str,
    now: int,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    dedupe_key: str | None = None,
) -> None:
    """Queue an e-mail in ``session``'s transaction; it is sent only if that transaction commits.

    Args:
        session: the caller's session (``tx``); nothing is committed here.
        kind: what the mail is about (``renewal_notice``, ``invoice``, ...).
        to: recipient addresses (``name@domain``), at least one, at most 50; duplicates dropped.
        subject: one line.
        body: plain text.
        now: epoch seconds; the mail is due from then.
        attachments: ``(filename, content_type, data)`` each, e.g.
            ``("invoice-2026-0001.pdf", "application/pdf", pdf)``.
        dedupe_key: when given, a second enqueue with the same key (from this or
            any other worker) does nothing, e.g. ``f"renewal_notice:{sub_id}:{period}"``.

    Raises:
        ValueError: a field that cannot go into an e-mail (bad address, line
            break in the subject, too large); the caller's bug, nothing queued.
    """
    message = compose(
        kind=kind,
        to=to,
        subject=subject,
        body=body,
        attachments=attachments,
        dedupe_key=dedupe_key,
    )
    add_notification(
        session,
        kind=message.kind,
        recipients=message.recipients,
        subject=message.subject,
        body=message.body,
        attachments=message.attachments,
        dedupe_key=message.dedupe_key,
        now=now,
    )


def compose(
    *,
    kind: str,
    to: Sequence[str],
    subject: str,
    body: str,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    dedupe_key: str | None = None,
) -> OutboxMessage:
    """The checked notification :func:`enqueue` stores (``id`` 0: not stored yet).

    Raises:
        ValueError: as :func:`enqueue`.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"notification kind {kind!r} must match {_KIND.pattern}")
    recipients = tuple(dict.fromkeys(address.strip() for address in to))
    if not recipients or len(recipients) > MAX_RECIPIENTS:
        raise ValueError(f"a notification needs 1 to {MAX_RECIPIENTS} recipients, not {len(to)}")
    for address in recipients:
        if not _ADDRESS.fullmatch(address):
            raise ValueError(f"not a plain e-mail address: {address!r}")
    # isprintable() is False for every line break, tab, control and surrogate
    if not subject.strip() or len(subject) > _MAX_SUBJECT or not subject.isprintable():
        raise ValueError(
            f"the subject must be one printable line of at most {_MAX_SUBJECT} characters"
        )
    if len(body) > MAX_BODY_CHARS or "\x00" in body or not _is_utf8(body):
        raise ValueError(f"the body must be text (no NUL) of at most {MAX_BODY_CHARS} characters")
    files = tuple(
        Attachment(name, content_type, bytes(data)) for name, content_type, data in attachments
    )
    for item in files:
        if not _FILENAME.fullmatch(item.filename):
            raise ValueError(f"attachment file name {item.filename!r} is not plain")
        if not _CONTENT_TYPE.fullmatch(item.content_type):
            raise ValueError(f"attachment content type {item.content_type!r} is not type/subtype")
    if sum(len(item.data) for item in files) > MAX_ATTACHMENT_BYTES:
        raise ValueError(f"attachments are over {MAX_ATTACHMENT_BYTES} bytes together")
    if dedupe_key is not None and not 0 < len(dedupe_key) <= 200:
        raise ValueError("a dedupe_key has 1 to 200 characters")
    return OutboxMessage(
        id=0,
        kind=kind,
        recipients=recipients,
        subject=subject,
        body=body,
        attachments=files,
        attempts=0,
        dedupe_key=dedupe_key,
    )


def fill(template: OutboxMessage, values: Mapping[str, str]) -> OutboxMessage:
    """``template`` (made by :func:`compose`) with each placeholder of ``values`` replaced by
    its value in the subject, body and dedupe key: one mail composed for many rows.

    What :func:`compose` checked on the template holds after printable values
    (no NUL, line break or surrogate), so only the lengths are checked again;
    any other value goes through :func:`compose` whole.

    Raises:
        ValueError: as :func:`enqueue`.
    """
    subject, body, key = template.subject, template.body, template.dedupe_key
    for placeholder, value in values.items():
        subject = subject.replace(placeholder, value)
        body = body.replace(placeholder, value)
        if key is not None:
            key = key.replace(placeholder, value)
    if (
        all(value.isprintable() for value in values.values())
        and len(subject) <= _MAX_SUBJECT
        and subject.strip()
        and len(body) <= MAX_BODY_CHARS
        and (key is None or 0 < len(key) <= 200)
    ):
        return OutboxMessage(
            id=0,
            kind=template.kind,
            recipients=template.recipients,
            subject=subject,
            body=body,
            attachments=template.attachments,
            attempts=0,
            dedupe_key=key,
        )
    return compose(
        kind=template.kind,
        to=template.recipients,
        subject=subject,
        body=body,
        attachments=[(a.filename, a.content_type, a.data) for a in template.attachments],
        dedupe_key=key,
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def build_message(message: OutboxMessage, *, sender: str, domain: str, now: int) -> EmailMessage:
    """The e-mail of an outbox row, with a Message-ID stable across retries.

    The Message-ID names the row, so a mail delivered twice (a sender that
    crashed between delivery and recording it) can be recognised as one.
    """
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = [Address(addr_spec=address) for address in message.recipients]
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(now, usegmt=True)
    mail["Message-ID"] = f"<notification-{message.id}@{domain}>"
    mail["X-Entitle-Kind"] = message.kind
    mail.set_content(message.body)
    for item in message.attachments:
        maintype, _, subtype = item.content_type.partition("/")
        mail.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename)
    return mail
