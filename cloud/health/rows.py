"""The ingest's lean strict parse: health report bytes to the row stored, in one pass.

:func:`protocol.health.parse_health` builds the typed :class:`HealthReport` through
a generic field reader (~30 µs a report); the ingest only needs the row it
stores, so :func:`parse_row` checks the same schema inline with plain dict
access and builds that row directly (~12 µs). It is exactly as strict: the size
before decoding, UTF-8, duplicate keys, ``NaN``/``Infinity``, every key, type and
range, no unknown key outside ``kind_specific``, and the same
:class:`BadHealthReport` reason as ``parse_health`` for every input (checked
against it with hypothesis in tests/cloud/health/test_health_rows.py). Its
``report`` is ``health_to_dict`` of the typed report, so what is stored is the
same either way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from protocol.errors import TopicError
from protocol.health import (
    ERROR_CATEGORIES,
    HEALTH_VERSION,
    KIND_SPECIFIC_DEPTH,
    KINDS,
    MAX_HEALTH_BYTES,
    MAX_REASONS,
    BadHealthReport,
)
from protocol.jsonwire import check_json_value
from protocol.topics import DEVICE_ID_MAX_LEN, check_device_id

__all__ = ["ReportRow", "encode_report", "parse_row"]

_INT64 = (1 << 63) - 1
_TOP = frozenset(
    (
        "v",
        "device_id",
        "seq",
        "ts",
        "kind",
        "fw",
        "uptime_s",
        "reboots",
        "cpu_temp_c",
        "mem_used_pct",
        "disk",
        "net",
        "serial",
        "kind_specific",
        "dropped",
        "errors",
    )
)
_REBOOTS = frozenset(("count", "last_reason"))
_DISK = frozenset(("used_pct", "write_errors", "reallocated"))
_NET = frozenset(("rssi_dbm", "loss_pct"))
_SERIAL = frozenset(("crc_errors", "timeouts"))
_ERRORS = frozenset(ERROR_CATEGORIES)

encode_report = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""The stored JSON text of a report's dict (compact; built once, not per call)."""


@dataclass(frozen=True, slots=True)
class ReportRow:
    """What the ingest stores of one valid report (``health_reports`` and the state)."""

    device_id: str
    seq: int
    ts: int
    kind: str
    report: dict[str, Any]
    cpu_temp_c: float | None
    mem_used_pct: float | None
    disk_used_pct: float | None
    loss_pct: float | None


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant).decode


def _bad(detail: str) -> NoReturn:
    raise BadHealthReport("bad_schema", detail)


def _int(value: Any, where: str, lo: int = 0) -> int:
    if type(value) is not int or not lo <= value <= _INT64:
        _bad(f"health.{where} must be an integer in [{lo}, {_INT64}]")
    return value


def _int_or_none(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _number(value: Any, where: str, lo: float, hi: float) -> float | None:
    if value is None:
        return None
    # an int is compared as it is: math.isfinite(10**400) raises OverflowError
    kind = type(value)
    if not (
        (kind is int and lo <= value <= hi)
        or (kind is float and math.isfinite(value) and lo <= value <= hi)
    ):
        _bad(f"health.{where} must be a number in [{lo}, {hi}]")
    return float(value)


def _text(value: Any, where: str, max_len: int) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not 0 < len(value) <= max_len:
        _bad(f"health.{where} must be a string of 1..{max_len} characters")
    return value


def _object(value: Any, keys: frozenset[str], where: str) -> dict[str, Any]:
    if type(value) is not dict or value.keys() != keys:
        _bad(f"health.{where} must be an object with exactly {sorted(keys)}")
    return value


def _counts(value: Any, where: str) -> dict[str, int]:
    if type(value) is not dict or len(value) > MAX_REASONS:
        _bad(f"health.errors.{where} must be an object of at most {MAX_REASONS} counts")
    for name, count in value.items():
        if not 0 < len(name) <= 64:
            _bad(f"health.errors.{where} has a name longer than 64")
        if type(count) is not int or not 0 <= count <= _INT64:
            _bad(f"health.errors.{where}.{name} must be a non-negative integer")
    return dict(value)


def parse_row(data: bytes, *, topic_device_id: str) -> ReportRow:
    """Decode and validate one report published on ``topic_device_id``'s health topic.

    Raises:
        BadHealthReport: too_large, bad_json, bad_schema, wrong_version or wrong_device,
            as :func:`protocol.health.parse_health` would for the same bytes.
    """
    if len(data) > MAX_HEALTH_BYTES:
        raise BadHealthReport("too_large", f"{len(data)} bytes is over {MAX_HEALTH_BYTES}")
    try:
        obj = _decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadHealthReport("bad_json", str(exc)[:200]) from exc
    if type(obj) is not dict:
        _bad(f"expected a JSON object, got {type(obj).__name__}")
    if "v" not in obj:
        _bad("health.v is missing")
    version = _int(obj["v"], "v")
    if version != HEALTH_VERSION:
        raise BadHealthReport("wrong_version", f"version {version} is not {HEALTH_VERSION}")
    device_id = _text(obj.get("device_id"), "device_id", DEVICE_ID_MAX_LEN)
    if device_id is None:
        _bad("health.device_id is missing or null")
    try:
        check_device_id(device_id)
    except TopicError as exc:
        raise BadHealthReport("bad_schema", str(exc)) from exc
    if device_id != topic_device_id:
        raise BadHealthReport(
            "wrong_device", f"report names {device_id!r} but was published by {topic_device_id!r}"
        )
    if obj.keys() != _TOP:
        _bad(f"health must have exactly the keys {sorted(_TOP)}")
    kind = obj["kind"]
    if kind not in KINDS or type(kind) is not str:
        _bad(f"health.kind must be one of {KINDS}")
    reboots = _object(obj["reboots"], _REBOOTS, "reboots")
    disk = _object(obj["disk"], _DISK, "disk")
    net = _object(obj["net"], _NET, "net")
    serial = _object(obj["serial"], _SERIAL, "serial")
    errors = _object(obj["errors"], _ERRORS, "errors")
    kind_specific = obj["kind_specific"]
    if type(kind_specific) is not dict:
        _bad("health.kind_specific must be an object")
    check_json_value(
        kind_specific,
        depth=KIND_SPECIFIC_DEPTH,
        where="health.kind_specific",
        error=BadHealthReport,
    )
    cpu = _number(obj["cpu_temp_c"], "cpu_temp_c", -100, 200)
    mem = _number(obj["mem_used_pct"], "mem_used_pct", 0, 100)
    disk_used = _number(disk["used_pct"], "disk.used_pct", 0, 100)
    loss = _number(net["loss_pct"], "net.loss_pct", 0, 100)
    seq = _int(obj["seq"], "seq", 1)
    ts = _int(obj["ts"], "ts")
    report = {
        "v": HEALTH_VERSION,
        "device_id": device_id,
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "fw": _text(obj["fw"], "fw", 64),
        "uptime_s": _int(obj["uptime_s"], "uptime_s"),
        "reboots": {
            "count": _int_or_none(reboots["count"], "reboots.count"),
            "last_reason": _text(reboots["last_reason"], "reboots.last_reason", 64),
        },
        "cpu_temp_c": cpu,
        "mem_used_pct": mem,
        "disk": {
            "used_pct": disk_used,
            "write_errors": _int_or_none(disk["write_errors"], "disk.write_errors"),
            "reallocated": _int_or_none(disk["reallocated"], "disk.reallocated"),
        },
        "net": {"rssi_dbm": _number(net["rssi_dbm"], "net.rssi_dbm", -200, 0), "loss_pct": loss},
        "serial": {
            "crc_errors": _int(serial["crc_errors"], "serial.crc_errors"),
            "timeouts": _int(serial["timeouts"], "serial.timeouts"),
        },
        "kind_specific": dict(kind_specific),
        "dropped": _int(obj["dropped"], "dropped"),
        "errors": {c: _counts(errors[c], c) for c in ERROR_CATEGORIES},
    }
    return ReportRow(device_id, seq, ts, kind, report, cpu, mem, disk_used, loss)
