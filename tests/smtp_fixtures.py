"""Pytest plugin: a real SMTP server (aiosmtpd) on a free port, and what arrived at it.

Fixtures:
    smtp_server  function scope; a running :class:`SmtpServer` on 127.0.0.1, stopped after.

The server speaks real SMTP over TCP (aiosmtpd in its own thread); tests read
``server.messages`` (parsed :class:`email.message.EmailMessage`) and may make
it answer "try later" / "no" with :attr:`SmtpServer.reply`, refuse some recipients
(:meth:`SmtpServer.refuse`), stop and restart
it on the same port, or require STARTTLS and a login (:meth:`SmtpServer.secure`).
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from broker.certs import issue_local_pki

__all__ = ["Delivery", "SmtpServer", "smtp_server"]


@dataclass(frozen=True)
class Delivery:
    """One message as the server received it: envelope and parsed content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


@dataclass
class _Handler:
    deliveries: list[Delivery] = field(default_factory=list)
    reply: str | None = None  # e.g. "451 4.3.0 try later"; None accepts
    unknown: set[str] = field(default_factory=set)  # recipients answered "550 no such user"
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.unknown:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.reply is not None:
            return self.reply
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.deliveries.append(Delivery(envelope.mail_from, tuple(envelope.rcpt_tos), parsed))
        return "250 2.0.0 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SmtpServer:
    """aiosmtpd on 127.0.0.1:``port``; plain SMTP unless :meth:`secure` was called."""

    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self._handler = _Handler()
        self._controller: Controller | None = None
        self._options: dict[str, Any] = {}
        self.ca_file: Path | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message accepted so far, in arrival order."""
        with self._handler.lock:
            return [delivery.message for delivery in self._handler.deliveries]

    @property
    def deliveries(self) -> list[Delivery]:
        with self._handler.lock:
            return list(self._handler.deliveries)

    @property
    def reply(self) -> str | None:
        return self._handler.reply

    @reply.setter
    def reply(self, value: str | None) -> None:
        """Answer every DATA with this (``"451 ..."``, ``"554 ..."``); ``None`` accepts."""
        self._handler.reply = value

    def refuse(self, *addresses: str) -> None:
        """Answer RCPT TO for these addresses with "550 no such user"."""
        self._handler.unknown.update(addresses)

    def secure(self, directory: Path, *, username: str, password: str) -> Path:
        """Require STARTTLS and this login from now on (restarts); returns the CA file."""
        pki = issue_local_pki(directory / "smtp-pki", devices=[])  # the broker's local CA
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki / "server.pem", pki / "server.key")

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and data.login == username.encode()
                and data.password == password.encode()
            )
            return AuthResult(success=ok, handled=False)

        self._options = {
            "tls_context": context,
            "require_starttls": True,
            "auth_required": True,
            "authenticator": authenticate,
        }
        self.ca_file = pki / "ca.pem"
        if self.running:
            self.stop()
            self.start()
        return self.ca_file

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = Controller(
            self._handler,
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            ready_timeout=10,
            **self._options,
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening (connections are refused) until :meth:`start`."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running SMTP server on a free port of 127.0.0.1."""
    server = SmtpServer(_free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
