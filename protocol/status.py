"""The device status message: retained on ``entitle/v1/dev/{id}/status``, online or offline.

Shape (DESIGN.md "MQTT topics": the device's LWT, retained: online/offline)::

    {"status": "online" | "offline", ...details}

The agent publishes ``online`` with what it knows about itself (token and key
set versions, trusted time, rejection and telemetry counters: the local API's
``/status``) each time it connects and whenever its decisions change; the
broker publishes the will, a bare ``offline``, when the device drops. The
details are free-form JSON for people and tools; the cloud reads ``status``,
``token_ver`` (the version the device holds: one behind gets its current token
again) and ``on_connect`` (``true`` on the first status of a new connection: on
NATS, whose nodes may replay no retained token after a failure, the cloud then
sends the current token again).

:func:`read` checks the size (4 KiB) before decoding, refuses what is not one
strict JSON object (duplicate keys, ``NaN``) and a ``status`` other than the
two words, and raises :class:`BadStatus` whose ``reason`` is ``too_large``,
``bad_json`` or ``bad_schema``. :func:`write` refuses what :func:`read` would,
so a device never publishes a status the cloud drops. An empty payload is not
a status at all but a cleared retained message: the caller's to handle.
Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import BadMessage
from protocol.jsonwire import check_json_value, decode_object

__all__ = ["MAX_STATUS_BYTES", "OFFLINE", "BadStatus", "Status", "read", "write"]

MAX_STATUS_BYTES = 4096
_DETAILS_DEPTH = 8
_WORDS = {"online": True, "offline": False}


class BadStatus(BadMessage):
    """A status message that is refused; ``reason`` says which check failed."""


@dataclass(frozen=True, slots=True)
class Status:
    """One status message: online or not, and the device's own free-form details."""

    online: bool
    details: Mapping[str, Any] = field(default_factory=dict)


OFFLINE = Status(online=False)
"""The will the broker publishes for a device that dropped."""


def _error(reason: str, detail: str) -> BadStatus:
    return BadStatus(reason, detail)


def _check_details(details: Mapping[str, Any]) -> None:
    check_json_value(dict(details), depth=_DETAILS_DEPTH, where="status", error=_error)


def read(data: bytes) -> Status:
    """Decode and validate one status message.

    Raises:
        BadStatus: too_large, bad_json or bad_schema.
    """
    obj = decode_object(data, max_bytes=MAX_STATUS_BYTES, error=_error)
    word = obj.pop("status", None)
    if not isinstance(word, str) or word not in _WORDS:
        raise BadStatus("bad_schema", 'status.status must be "online" or "offline"')
    _check_details(obj)
    return Status(online=_WORDS[word], details=obj)


def write(status: Status) -> bytes:
    """UTF-8 JSON of ``status``, the word first, then its details.

    Raises:
        BadStatus: bad_schema (details that are not JSON, or name ``status``
            themselves) or too_large (over :data:`MAX_STATUS_BYTES`).
    """
    if "status" in status.details:
        raise BadStatus("bad_schema", "status details must not hold a 'status' key")
    _check_details(status.details)
    body = {"status": "online" if status.online else "offline", **status.details}
    data = json.dumps(body, allow_nan=False).encode()  # the separators the agent always used
    if len(data) > MAX_STATUS_BYTES:
        raise BadStatus("too_large", f"status is {len(data)} bytes")
    return data
