"""MQTT topic names of the contract, built and parsed in one place.

Device ids are ``[A-Za-z0-9_-]{1,64}``: no ``/``, ``+``, ``#`` or ``$``, so an
id can never widen a subscription or an ACL pattern. That rule lives here
once: :data:`DEVICE_ID_REGEX` for code that matches whole strings,
:data:`DEVICE_ID_PATTERN` (anchored) for schema validators (pydantic, the
OpenAPI document), :data:`DEVICE_ID_MAX_LEN` for columns and length checks.
"""

from __future__ import annotations

import re
from typing import Literal

from protocol.errors import TopicError

__all__ = [
    "KEYS_TOPIC",
    "PREFIX",
    "CLOUD_GROUP",
    "DEVICE_ID_MAX_LEN",
    "DEVICE_ID_PATTERN",
    "DEVICE_ID_REGEX",
    "DEVICE_READS",
    "DEVICE_WRITES",
    "Channel",
    "check_device_id",
    "cloud_subscriptions",
    "device_reads",
    "device_writes",
    "device_topic",
    "health_share_subscription",
    "parse_device_topic",
]

PREFIX = "entitle/v1"
KEYS_TOPIC = f"{PREFIX}/keys"
Channel = Literal["entitlement", "health", "status", "cmd", "cmd/res"]
CHANNELS: tuple[Channel, ...] = ("entitlement", "health", "status", "cmd", "cmd/res")
# Who may do what, the one table every broker's access rules are generated from:
# a device reads only its own entitlement and commands (and the key set), and
# writes only its own health, status and command results. Nothing else: no
# wildcard, no other device, no shared-subscription group.
DEVICE_READS: tuple[Channel, ...] = ("entitlement", "cmd")
DEVICE_WRITES: tuple[Channel, ...] = ("health", "status", "cmd/res")
CLOUD_GROUP = "cloud"  # the shared-subscription group cloud workers split the stream in
DEVICE_ID_MAX_LEN = 64
DEVICE_ID_REGEX = rf"[A-Za-z0-9_-]{{1,{DEVICE_ID_MAX_LEN}}}"
DEVICE_ID_PATTERN = f"^{DEVICE_ID_REGEX}$"
_DEVICE_ID = re.compile(DEVICE_ID_REGEX)
_DEVICE_TOPIC = re.compile(
    rf"{re.escape(PREFIX)}/dev/([^/]+)/(entitlement|health|status|cmd|cmd/res)"
)


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is a valid id; raise TopicError otherwise."""
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise TopicError(f"device id {device_id!r} must match {DEVICE_ID_REGEX}")
    return device_id


def device_topic(device_id: str, channel: Channel) -> str:
    """``entitle/v1/dev/{device_id}/{channel}``."""
    if channel not in CHANNELS:
        raise TopicError(f"unknown channel {channel!r}")
    return f"{PREFIX}/dev/{check_device_id(device_id)}/{channel}"


def parse_device_topic(topic: str) -> tuple[str, Channel]:
    """Split a concrete device topic into (device id, channel)."""
    match = _DEVICE_TOPIC.fullmatch(topic)
    if match is None:
        raise TopicError(f"{topic!r} is not an entitle device topic")
    channel: Channel = match.group(2)  # type: ignore[assignment]
    return check_device_id(match.group(1)), channel


def health_share_subscription(group: str = CLOUD_GROUP) -> str:
    """The shared subscription cloud workers use to split the health stream."""
    return f"$share/{group}/{PREFIX}/dev/+/health"


def device_reads(device_id: str) -> tuple[str, ...]:
    """The exact topics ``device_id`` may subscribe to and receive."""
    return (*(device_topic(device_id, c) for c in DEVICE_READS), KEYS_TOPIC)


def device_writes(device_id: str) -> tuple[str, ...]:
    """The exact topics ``device_id`` may publish to (its LWT included)."""
    return tuple(device_topic(device_id, c) for c in DEVICE_WRITES)


def cloud_subscriptions(group: str = CLOUD_GROUP) -> tuple[str, ...]:
    """The filters a cloud login may subscribe to: all of ``PREFIX``, plainly or in
    its own shared group (no other group, so a cloud login cannot starve another)."""
    return (f"{PREFIX}/#", f"$share/{group}/{PREFIX}/#")
