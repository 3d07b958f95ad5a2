"""The mail boundary: a one-method :class:`Mailer` protocol and its SMTP adapter.

:class:`SmtpMailer` (aiosmtplib) maps every foreign error to ours: a server
that cannot be reached, times out or answers 4xx raises
:class:`MailUnavailable` (the outbox retries later); a 5xx refusal of the
sender, all recipients or the data raises :class:`MailRejected` (retrying
would not help). Authentication failures count as unavailable: they are a
configuration fault, and the mails should wait for the fix, not be dropped.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import aiosmtplib

from cloud.errors import CloudError
from cloud.settings import CloudSettings
from protocol.errors import TransportError

__all__ = ["MailRejected", "MailUnavailable", "Mailer", "SmtpMailer"]


class MailUnavailable(TransportError):
    """The mail server is down, slow, or answered "try again later"."""


class MailRejected(CloudError):
    """The mail server refused the message for good (5xx)."""


@runtime_checkable
class Mailer(Protocol):
    """Hands e-mails to a mail server."""

    async def send(self, message: EmailMessage) -> list[str]:
        """Deliver ``message`` to its ``To`` recipients.

        Returns:
            The recipients the server refused while taking it for the others
            (none refused: an empty list).

        Raises:
            MailUnavailable: not delivered, try again later.
            MailRejected: not delivered, and never will be.
        """
        ...


@dataclass(frozen=True, slots=True)
class SmtpMailer:
    """Sends through an SMTP server (submission with STARTTLS, implicit TLS, or plain)."""

    host: str
    port: int
    sender: str
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> SmtpMailer | None:
        """The mailer of ``ENTITLE_SMTP_*``; ``None`` without ``smtp_host``.

        Raises:
            ValueError: a username without a password file, or an unreadable one.
        """
        if settings.smtp_host is None:
            return None
        password = None
        if settings.smtp_username is not None:
            if settings.smtp_password_file is None:
                raise ValueError(
                    "ENTITLE_SMTP_USERNAME is set but ENTITLE_SMTP_PASSWORD_FILE is not: "
                    "put the SMTP password in a file and name it there"
                )
            try:
                password = settings.smtp_password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the SMTP password file {settings.smtp_password_file}: "
                    f"{exc.strerror}"
                ) from exc
        if not parseaddr(settings.smtp_sender)[1]:
            raise ValueError(f"ENTITLE_SMTP_SENDER {settings.smtp_sender!r} has no address")
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=password,
            ca_file=settings.smtp_ca_file,
            timeout_s=settings.smtp_timeout_s,
        )

    def __repr__(self) -> str:  # the password stays out of logs and tracebacks
        return f"SmtpMailer({self.host}:{self.port}, {self.security}, sender={self.sender!r})"

    async def send(self, message: EmailMessage) -> list[str]:
        tls_context = None
        if self.security != "none":
            tls_context = ssl.create_default_context(
                cafile=None if self.ca_file is None else str(self.ca_file)
            )
        try:
            refused, _ = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.security == "tls",
                start_tls=self.security == "starttls",
                tls_context=tls_context,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise MailUnavailable(
                f"the SMTP server {self.host}:{self.port} refused our login ({exc.code}): "
                "check ENTITLE_SMTP_USERNAME and the password file"
            ) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            if all(code >= 500 for code in codes):
                raise MailRejected(f"every recipient was refused ({codes})") from exc
            raise MailUnavailable(f"recipients refused for now ({codes})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise MailRejected(f"the SMTP server refused the mail: {exc.code}") from exc
            raise MailUnavailable(f"the SMTP server said try later: {exc.code}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailUnavailable(
                f"cannot reach the SMTP server {self.host}:{self.port}: {type(exc).__name__}"
            ) from exc
        return [f"{address} ({response.code})" for address, response in refused.items()]
