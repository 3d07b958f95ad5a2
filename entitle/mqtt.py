"""MQTT client options shared by the agent's session and the cloud's bridge."""

from __future__ import annotations

import random
import socket

import aiomqtt

__all__ = ["SOCKET_OPTIONS", "backoff_delay", "protocol_version"]

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
