"""MQTT client options shared by the agent's session and the cloud's bridge."""

from __future__ import annotations

import socket

import aiomqtt

__all__ = ["SOCKET_OPTIONS", "protocol_version"]

# Entitlements and health are small messages: without TCP_NODELAY, Nagle's
# algorithm meets the peer's delayed ACK and adds ~40 ms to a QoS 1 round trip.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def protocol_version(number: int) -> aiomqtt.ProtocolVersion:
    """5 → MQTT 5, 4 → MQTT 3.1.1."""
    return aiomqtt.ProtocolVersion.V5 if number == 5 else aiomqtt.ProtocolVersion.V311
