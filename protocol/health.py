"""Health report JSON v1: the one schema devices publish and the cloud ingests.

Shape (DESIGN.md "Health report" plus ``dropped`` and ``errors``)::

    {"v": 1, "device_id": str, "seq": int >= 1, "ts": epoch s, "kind": "gateway"|"camera"|"counter",
     "fw": str | null, "uptime_s": int,
     "reboots": {"count": int | null, "last_reason": str | null},   # null: not known
     "cpu_temp_c": number | null, "mem_used_pct": number | null,
     "disk": {"used_pct": number | null, "write_errors": int | null, "reallocated": int | null},
     "net": {"rssi_dbm": number | null, "loss_pct": number | null},
     "serial": {"crc_errors": int, "timeouts": int},
     "kind_specific": {...},           # free-form, unknown keys allowed here only
     "dropped": int,                   # reports dropped from a full outbox since the last one
     "errors": {"serial": {reason: n}, "cmd": {reason: n}, "rejected_tokens": {reason: n}}}

:func:`parse_health` checks the size (16 KiB) before decoding, then every key,
type and range, and that ``device_id`` is the publishing topic's device. It
raises :class:`BadHealthReport` whose ``reason`` is one of ``too_large``,
``bad_json``, ``bad_schema``, ``wrong_version``, ``wrong_device``. Pure: no I/O.

``reboots.count`` is the firmware's own counter; a report built without the
firmware's figures (the read failed, or there is no firmware) carries null,
never a guess: a made-up 0 between two real counts would read as a reset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import BadMessage, TopicError
from protocol.jsonwire import Fields, decode_object
from protocol.topics import DEVICE_ID_MAX_LEN, check_device_id

__all__ = [
    "KIND_SPECIFIC_DEPTH",
    "MAX_REASONS",
    "ERROR_CATEGORIES",
    "HEALTH_VERSION",
    "KINDS",
    "MAX_HEALTH_BYTES",
    "BadHealthReport",
    "Disk",
    "HealthReport",
    "Net",
    "Reboots",
    "SerialCounters",
    "health_from_dict",
    "health_to_dict",
    "health_to_json",
    "parse_health",
]

HEALTH_VERSION = 1
MAX_HEALTH_BYTES = 16 * 1024
KINDS = ("gateway", "camera", "counter")
ERROR_CATEGORIES = ("serial", "cmd", "rejected_tokens")
KIND_SPECIFIC_DEPTH = 4
MAX_REASONS = 64


class BadHealthReport(BadMessage):
    """A health report that is refused; ``reason`` says which check failed."""


@dataclass(frozen=True, slots=True)
class Reboots:
    count: int | None = None  # None: not known (no firmware figures in this report)
    last_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Disk:
    used_pct: float | None = None
    write_errors: int | None = None
    reallocated: int | None = None


@dataclass(frozen=True, slots=True)
class Net:
    rssi_dbm: float | None = None
    loss_pct: float | None = None


@dataclass(frozen=True, slots=True)
class SerialCounters:
    crc_errors: int = 0
    timeouts: int = 0


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One health report; ``(device_id, seq)`` identifies it.

    The agent's collector builds it (validated, ``seq`` 0 and ``dropped`` 0:
    not numbered yet); its outbox numbers it and stores its JSON
    (:func:`health_to_json`), the bytes published; the cloud reads those bytes
    back into this value (:func:`parse_health`) and writes its row from the
    attributes. On the wire ``seq`` is always at least 1.
    """

    device_id: str
    seq: int
    ts: int
    kind: str
    uptime_s: int
    fw: str | None = None
    reboots: Reboots = field(default_factory=Reboots)
    cpu_temp_c: float | None = None
    mem_used_pct: float | None = None
    disk: Disk = field(default_factory=Disk)
    net: Net = field(default_factory=Net)
    serial: SerialCounters = field(default_factory=SerialCounters)
    kind_specific: Mapping[str, Any] = field(default_factory=dict)
    dropped: int = 0
    errors: Mapping[str, Mapping[str, int]] = field(
        default_factory=lambda: {c: {} for c in ERROR_CATEGORIES}
    )


def _error(reason: str, detail: str) -> BadHealthReport:
    return BadHealthReport(reason, detail)


def health_from_dict(obj: Mapping[str, Any], *, topic_device_id: str | None = None) -> HealthReport:
    """Validate a decoded report; ``topic_device_id`` (when given) must be its device."""
    f = Fields(obj, where="health", error=_error)
    version = f.integer("v", lo=0)
    if version != HEALTH_VERSION:
        raise BadHealthReport("wrong_version", f"version {version} is not {HEALTH_VERSION}")
    device_id = f.text("device_id", max_len=DEVICE_ID_MAX_LEN)
    try:
        check_device_id(device_id)
    except TopicError as exc:
        raise BadHealthReport("bad_schema", str(exc)) from exc
    if topic_device_id is not None and device_id != topic_device_id:
        raise BadHealthReport(
            "wrong_device", f"report names {device_id!r} but was published by {topic_device_id!r}"
        )
    kind = f.text("kind", max_len=16)
    if kind not in KINDS:
        raise BadHealthReport("bad_schema", f"health.kind must be one of {KINDS}")
    reboots, disk, net = f.nested("reboots"), f.nested("disk"), f.nested("net")
    serial = f.nested("serial")
    errors_f = f.nested("errors")
    report = HealthReport(
        device_id=device_id,
        seq=f.integer("seq", lo=1),
        ts=f.integer("ts"),
        kind=kind,
        fw=f.text("fw", max_len=64, null=True),
        uptime_s=f.integer("uptime_s"),
        reboots=Reboots(
            count=reboots.integer("count", null=True),
            last_reason=reboots.text("last_reason", max_len=64, null=True),
        ),
        cpu_temp_c=f.number("cpu_temp_c", lo=-100, hi=200, null=True),
        mem_used_pct=f.number("mem_used_pct", lo=0, hi=100, null=True),
        disk=Disk(
            used_pct=disk.number("used_pct", lo=0, hi=100, null=True),
            write_errors=disk.integer("write_errors", null=True),
            reallocated=disk.integer("reallocated", null=True),
        ),
        net=Net(
            rssi_dbm=net.number("rssi_dbm", lo=-200, hi=0, null=True),
            loss_pct=net.number("loss_pct", lo=0, hi=100, null=True),
        ),
        serial=SerialCounters(
            crc_errors=serial.integer("crc_errors"), timeouts=serial.integer("timeouts")
        ),
        kind_specific=f.free("kind_specific", depth=KIND_SPECIFIC_DEPTH),
        dropped=f.integer("dropped"),
        errors={c: errors_f.counts(c, max_keys=MAX_REASONS) for c in ERROR_CATEGORIES},
    )
    for nested in (reboots, disk, net, serial, errors_f, f):
        nested.done()
    return report


def parse_health(data: bytes, *, topic_device_id: str) -> HealthReport:
    """Decode and validate one report published on ``topic_device_id``'s health topic.

    Raises:
        BadHealthReport: too_large, bad_json, bad_schema, wrong_version or wrong_device.
    """
    obj = decode_object(data, max_bytes=MAX_HEALTH_BYTES, error=_error)
    return health_from_dict(obj, topic_device_id=topic_device_id)


def health_to_dict(report: HealthReport) -> dict[str, Any]:
    """The report as its JSON object (every key present, in schema order)."""
    return {
        "v": HEALTH_VERSION,
        "device_id": report.device_id,
        "seq": report.seq,
        "ts": report.ts,
        "kind": report.kind,
        "fw": report.fw,
        "uptime_s": report.uptime_s,
        "reboots": {"count": report.reboots.count, "last_reason": report.reboots.last_reason},
        "cpu_temp_c": report.cpu_temp_c,
        "mem_used_pct": report.mem_used_pct,
        "disk": {
            "used_pct": report.disk.used_pct,
            "write_errors": report.disk.write_errors,
            "reallocated": report.disk.reallocated,
        },
        "net": {"rssi_dbm": report.net.rssi_dbm, "loss_pct": report.net.loss_pct},
        "serial": {"crc_errors": report.serial.crc_errors, "timeouts": report.serial.timeouts},
        "kind_specific": dict(report.kind_specific),
        "dropped": report.dropped,
        "errors": {c: dict(report.errors.get(c, {})) for c in ERROR_CATEGORIES},
    }


def health_to_json(report: HealthReport, *, max_bytes: int | None = MAX_HEALTH_BYTES) -> bytes:
    """Compact UTF-8 JSON of ``report``.

    Raises:
        BadHealthReport: too_large, over ``max_bytes`` (16 KiB; None: no limit,
            for a store that keeps what was built and refuses it on sending).
    """
    data = json.dumps(health_to_dict(report), separators=(",", ":"), allow_nan=False).encode()
    if max_bytes is not None and len(data) > max_bytes:
        raise BadHealthReport("too_large", f"report is {len(data)} bytes")
    return data
