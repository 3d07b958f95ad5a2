"""In-memory simulators of the cloud's ports, for tests and demos.

They implement the same Protocols as the real adapters, keep everything they
were given for inspection, and can be told to fail like a broker that is down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.errors import TransportError
from protocol.topics import KEYS_TOPIC, device_topic

__all__ = ["AccountsSimulator", "PublisherSimulator", "Published"]


@dataclass(frozen=True, slots=True)
class Published:
    """One message the simulated broker received."""

    topic: str
    payload: bytes
    expiry_s: int | None


@dataclass
class PublisherSimulator:
    """An :class:`~cloud.ports.EntitlementPublisher` that records instead of sending.

    ``retained`` mirrors the broker's retained store (an empty payload clears
    it); ``log`` keeps every message in order; ``down = True`` makes every
    call raise :class:`TransportError`.
    """

    down: bool = False
    log: list[Published] = field(default_factory=list)
    retained: dict[str, Published] = field(default_factory=dict)

    def _record(self, message: Published) -> None:
        if self.down:
            raise TransportError("simulated broker is down")
        self.log.append(message)
        if message.payload:
            self.retained[message.topic] = message
        else:
            self.retained.pop(message.topic, None)

    async def publish_entitlement(self, device_id: str, token: bytes, *, expiry_s: int) -> None:
        self._record(Published(device_topic(device_id, "entitlement"), token, expiry_s))

    async def publish_keyset(self, data: bytes) -> None:
        self._record(Published(KEYS_TOPIC, data, None))

    async def clear_entitlement(self, device_id: str) -> None:
        self._record(Published(device_topic(device_id, "entitlement"), b"", None))

    async def publish_command(self, device_id: str, payload: bytes) -> None:
        """A :class:`~cloud.health.commands.CommandPublisher` too: logged, never retained."""
        if self.down:
            raise TransportError("simulated broker is down")
        self.log.append(Published(device_topic(device_id, "cmd"), payload, None))

    def commands_sent(self, device_id: str) -> list[bytes]:
        """Every command published to ``device_id``, oldest first."""
        topic = device_topic(device_id, "cmd")
        return [m.payload for m in self.log if m.topic == topic]

    def entitlement(self, device_id: str) -> bytes | None:
        """The token currently retained for ``device_id``."""
        message = self.retained.get(device_topic(device_id, "entitlement"))
        return message.payload if message else None

    def entitlements_published(self, device_id: str) -> list[bytes]:
        """Every token published for ``device_id``, oldest first."""
        topic = device_topic(device_id, "entitlement")
        return [m.payload for m in self.log if m.topic == topic and m.payload]


@dataclass
class AccountsSimulator:
    """A :class:`~cloud.ports.BrokerAccounts` holding passwords in a dict."""

    passwords: dict[str, str] = field(default_factory=dict)
    fail: bool = False

    def set_password(self, username: str, password: str) -> None:
        if self.fail:
            raise OSError("simulated password file is not writable")
        self.passwords[username] = password

    def remove(self, username: str) -> None:
        if self.fail:
            raise OSError("simulated password file is not writable")
        self.passwords.pop(username, None)
