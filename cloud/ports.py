"""The cloud's I/O boundaries, one small Protocol each (the clock is :mod:`common.clock`).

Each has a real adapter (:class:`cloud.bridge.MqttBridge`,
``common.dynsec.DynsecAccounts``) and a simulator in :mod:`cloud.testing`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["BrokerAccounts", "EntitlementPublisher"]


@runtime_checkable
class EntitlementPublisher(Protocol):
    """Delivers tokens and key sets to devices (retained MQTT messages)."""

    async def publish_entitlement(self, device_id: str, token: bytes, *, expiry_s: int) -> None:
        """Retain ``token`` on the device's entitlement topic for ``expiry_s`` seconds.

        Raises:
            protocol.errors.TransportError: not delivered to the broker in time.
        """
        ...

    async def publish_keyset(self, data: bytes) -> None:
        """Retain a key-set message on ``entitle/v1/keys``."""
        ...

    async def clear_entitlement(self, device_id: str) -> None:
        """Remove the retained token of a device that was deleted."""
        ...


@runtime_checkable
class BrokerAccounts(Protocol):
    """Broker credentials of device identities (username = device id)."""

    def set_password(self, username: str, password: str) -> None:
        """Create or replace the account's password."""
        ...

    def remove(self, username: str) -> None:
        """Delete the account; removing an unknown account is not an error."""
        ...
