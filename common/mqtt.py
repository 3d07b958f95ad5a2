"""MQTT client options shared by the agent's session and the cloud's bridge."""

from __future__ import annotations

import logging
import random
import socket

import aiomqtt
from aiomqtt.exceptions import MqttConnectError  # a refused CONNACK; not re-exported

__all__ = [
    "SOCKET_OPTIONS",
    "ConnectionLog",
    "backoff_delay",
    "protocol_version",
    "refused_login",
]

# Entitlements and health are small messages: without TCP_NODELAY, Nagle's
# algorithm meets the peer's delayed ACK and adds ~40 ms to a QoS 1 round trip.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def protocol_version(number: int) -> aiomqtt.ProtocolVersion:
    """5 → MQTT 5, 4 → MQTT 3.1.1."""
    return aiomqtt.ProtocolVersion.V5 if number == 5 else aiomqtt.ProtocolVersion.V311


_jitter = random.Random()


def backoff_delay(
    attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None
) -> float:
    """Seconds before reconnect ``attempt`` (0-based): exponential, capped, equal jitter.

    Half the ceiling is kept so a fleet never hammers a broker that just came
    back; the other half is random so reconnects spread out.
    """
    ceiling = min(cap_s, base_s * (1 << min(attempt, 32)))
    return ceiling / 2 + (rng or _jitter).uniform(0, ceiling / 2)


_CREDENTIALS_HINT = (
    "check the user and password in ENTITLE_BROKER_URL (mqtt://USER:PASSWORD@host:port) "
    "or ENTITLE_BROKER_PASSWORD_FILE"
)
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (0x86, 0x87)
_REFUSED_LOGIN = {
    4: "bad user name or password",
    5: "not authorized",
    0x86: "bad user name or password",
    0x87: "not authorized",
}


def refused_login(exc: aiomqtt.MqttError) -> str | None:
    """Why the broker refused our login (a CONNACK code), or None for any other error."""
    if not isinstance(exc, MqttConnectError):
        return None
    code = exc.rc if isinstance(exc.rc, int) or exc.rc is None else exc.rc.value
    return _REFUSED_LOGIN.get(code) if code is not None else None


class ConnectionLog:
    """What a reconnect loop tells its log: each change of state once, not every attempt.

    A refused login is an error that names the settings to check; the loop
    keeps retrying (the broker may be given the account later) but repeats
    are logged at DEBUG until the state changes (connected, or another error).
    """

    def __init__(self, log: logging.Logger, *, where: str, login: str) -> None:
        self._log = log
        self._where = where
        self._login = login
        self._last: str | None = None

    def connected(self, message: str) -> None:
        """Log ``message`` (at INFO) and forget the last failure."""
        self._last = None
        self._log.info("%s", message)

    def failed(self, exc: aiomqtt.MqttError, *, retry_in_s: float) -> None:
        refused = refused_login(exc)
        if refused is not None:
            state = f"refused:{refused}"
            level = logging.ERROR
            message = (
                f"the broker at {self._where} refused login {self._login!r}: {refused}; "
                f"{_CREDENTIALS_HINT}; still retrying (next in {retry_in_s:.1f}s), "
                "as the broker may get the account later"
            )
        else:
            state = f"error:{exc}"
            level = logging.WARNING
            message = f"broker at {self._where}: {exc}; still retrying (next in {retry_in_s:.1f}s)"
        if state == self._last:
            self._log.debug("broker at %s: %s; retrying in %.1fs", self._where, exc, retry_in_s)
            return
        self._last = state
        self._log.log(level, "%s", message)
