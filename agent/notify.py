"""Telling systemd how the agent is doing: ``sd_notify(3)`` over ``NOTIFY_SOCKET``.

A unit with ``Type=notify`` waits for ``READY=1`` before it counts the agent as
started; with ``WatchdogSec=`` systemd sets ``WATCHDOG_USEC`` and restarts the
agent if no ``WATCHDOG=1`` arrives in time; ``STOPPING=1`` says a stop is under
way. The protocol is one datagram per message on a Unix socket (``@`` at the
start of the path names the abstract namespace), so this is a few lines of the
standard library rather than a dependency. Outside systemd (no
``NOTIFY_SOCKET``) :meth:`SystemdNotifier.from_environment` gives ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["SystemdNotifier"]

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state lines to systemd's notification socket; never raises on send."""

    def __init__(self, address: str, *, watchdog_s: float | None = None) -> None:
        """``address``: ``NOTIFY_SOCKET``'s value; ``watchdog_s``: the watchdog's period."""
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = watchdog_s
        self.sent = 0
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None
    ) -> SystemdNotifier | None:
        """The notifier systemd asked for, or ``None`` when not run by it.

        The watchdog is on when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID`` (if
        set) is this process, as ``sd_watchdog_enabled(3)`` decides.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        if not address or address[0] not in "/@":
            return None
        watchdog_s = None
        usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0:
            if not for_pid or for_pid == str(os.getpid() if pid is None else pid):
                watchdog_s = int(usec) / 1_000_000
        return cls(address, watchdog_s=watchdog_s)

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (``"READY=1"``, ``"STATUS=…"``) as one datagram; False if it failed."""
        try:
            self._socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd gone or socket full: the agent keeps working
            log.warning("systemd notification %s not sent: %s", lines[0], exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping at half the watchdog period until cancelled (return at once if it is off).

        A ping from the agent's event loop says the loop still turns: a wedged
        loop stops the pings and systemd restarts the agent.
        """
        if self.watchdog_s is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        self._socket.close()
