"""Strict JSON for untrusted telemetry messages: size first, then a typed field reader.

The size is checked before any decoding; duplicate keys, ``NaN``/``Infinity``,
non-object documents and runaway nesting are refused. :class:`Fields` reads one
JSON object key by key with types and ranges and refuses keys it was not asked
about, so a schema is a short sequence of calls (see :mod:`protocol.health`).
Every refusal is raised through the caller's error factory, so each message
family keeps its own typed error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

__all__ = ["ErrorFactory", "Fields", "check_json_value", "decode_object"]

ErrorFactory = Callable[[str, str], Exception]
"""``(reason, detail) -> exception``; reasons used here: too_large, bad_json, bad_schema."""

_INT64 = (1 << 63) - 1


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def decode_object(data: bytes, *, max_bytes: int, error: ErrorFactory) -> dict[str, Any]:
    """Decode ``data`` as one JSON object of at most ``max_bytes`` bytes."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error("bad_json", f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise error("too_large", f"{len(data)} bytes is over the {max_bytes}-byte limit")
    try:
        value = json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error("bad_json", str(exc)[:200]) from exc
    if not isinstance(value, dict):
        raise error("bad_schema", f"expected a JSON object, got {type(value).__name__}")
    return value


def check_json_value(value: object, *, depth: int, where: str, error: ErrorFactory) -> None:
    """Refuse a free-form value nested deeper than ``depth`` or holding non-JSON types."""
    if depth < 0:
        raise error("bad_schema", f"{where} is nested too deeply")
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise error("bad_schema", f"{where} is not a finite number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json_value(item, depth=depth - 1, where=f"{where}[{i}]", error=error)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise error("bad_schema", f"{where} has a non-text key")
            check_json_value(item, depth=depth - 1, where=f"{where}.{key}", error=error)
        return
    raise error("bad_schema", f"{where} is not a JSON value")


class Fields:
    """Typed, ranged reads of one JSON object; :meth:`done` refuses unread keys."""

    __slots__ = ("_error", "_obj", "_read", "_where")

    def __init__(self, obj: object, *, where: str, error: ErrorFactory) -> None:
        if not isinstance(obj, dict):
            raise error("bad_schema", f"{where} must be an object")
        self._obj: Mapping[str, Any] = obj
        self._where = where
        self._error = error
        self._read: set[str] = set()

    def _fail(self, key: str, what: str) -> NoReturn:
        raise self._error("bad_schema", f"{self._where}.{key} {what}")

    def _get(self, key: str, *, null: bool) -> Any:
        self._read.add(key)
        if key not in self._obj:
            self._fail(key, "is missing")
        value = self._obj[key]
        if value is None and not null:
            self._fail(key, "must not be null")
        return value

    def has(self, key: str) -> bool:
        return key in self._obj

    def integer(self, key: str, *, lo: int = 0, hi: int = _INT64, null: bool = False) -> Any:
        """An integer (never a bool) in ``[lo, hi]``, or None when ``null``."""
        value = self._get(key, null=null)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self._fail(key, "must be an integer")
        if not lo <= value <= hi:
            self._fail(key, f"must be in [{lo}, {hi}]")
        return value

    def number(self, key: str, *, lo: float, hi: float, null: bool = False) -> Any:
        """A finite int or float in ``[lo, hi]`` returned as float, or None."""
        value = self._get(key, null=null)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail(key, "must be a number")
        if not (math.isfinite(value) and lo <= value <= hi):
            self._fail(key, f"must be in [{lo}, {hi}]")
        return float(value)

    def text(self, key: str, *, max_len: int, null: bool = False) -> Any:
        """A string of 1..``max_len`` characters, or None."""
        value = self._get(key, null=null)
        if value is None:
            return None
        if not isinstance(value, str) or not 0 < len(value) <= max_len:
            self._fail(key, f"must be a string of 1..{max_len} characters")
        return value

    def flag(self, key: str) -> bool:
        value = self._get(key, null=False)
        if not isinstance(value, bool):
            self._fail(key, "must be true or false")
        return value

    def nested(self, key: str) -> Fields:
        """The nested object at ``key`` as its own reader."""
        return Fields(self._get(key, null=False), where=f"{self._where}.{key}", error=self._error)

    def free(self, key: str, *, depth: int) -> dict[str, Any]:
        """A free-form object (unknown keys allowed) nested at most ``depth`` levels."""
        value = self._get(key, null=False)
        if not isinstance(value, dict):
            self._fail(key, "must be an object")
        check_json_value(value, depth=depth, where=f"{self._where}.{key}", error=self._error)
        return dict(value)

    def counts(self, key: str, *, max_keys: int, max_key_len: int = 64) -> dict[str, int]:
        """An object of name -> non-negative integer count."""
        value = self._get(key, null=False)
        if not isinstance(value, dict) or len(value) > max_keys:
            self._fail(key, f"must be an object of at most {max_keys} counts")
        out: dict[str, int] = {}
        for name, count in value.items():
            if not 0 < len(name) <= max_key_len:
                self._fail(key, f"has a name longer than {max_key_len}")
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _INT64:
                self._fail(f"{key}.{name}", "must be a non-negative integer")
            out[name] = count
        return out

    def done(self) -> None:
        """Refuse any key the schema did not read."""
        extra = sorted(set(self._obj) - self._read)
        if extra:
            raise self._error("bad_schema", f"{self._where} has unknown keys {extra[:5]}")
