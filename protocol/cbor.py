"""Strict CBOR decoding for untrusted input.

cbor2 decodes whatever is well-formed; a verifier needs less. Before cbor2
sees the bytes, a structural scan (headers only, no values built) refuses
what the protocol never emits: input over the size limit, indefinite
lengths, nesting deeper than a small bound, reserved additional-info values,
duplicate map keys, map keys that are not int/text/bytes, and trailing bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from protocol.errors import BadCbor, TooLarge

__all__ = ["MAX_DEPTH", "decode", "encode"]

MAX_DEPTH = 16

_MAJOR_UINT, _MAJOR_NINT, _MAJOR_BYTES, _MAJOR_TEXT = 0, 1, 2, 3
_MAJOR_ARRAY, _MAJOR_MAP, _MAJOR_TAG, _MAJOR_SIMPLE = 4, 5, 6, 7


def encode(value: Any) -> bytes:
    """Encode in canonical (deterministic) CBOR."""
    return cbor2.dumps(value, canonical=True)


def decode(data: bytes, *, max_size: int, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one CBOR item that must fill ``data`` exactly.

    Raises:
        TooLarge: ``len(data) > max_size`` (checked first).
        BadCbor: anything outside the strict subset described above.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadCbor(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise TooLarge(f"{len(data)} bytes is over the {max_size}-byte limit")
    if not data:
        raise BadCbor("empty input")
    end = _scan(data, 0, 0, max_depth)
    if end != len(data):
        raise BadCbor(f"{len(data) - end} trailing bytes after the CBOR item")
    try:
        return _thaw(cbor2.loads(data))
    except (cbor2.CBORDecodeError, ValueError, OverflowError, TypeError) as exc:
        raise BadCbor(f"cbor2 refused the item: {exc}") from exc


def _thaw(item: Any) -> Any:
    """cbor2 returns tuples and frozendicts inside tags; give callers one shape."""
    if isinstance(item, cbor2.CBORTag):
        return cbor2.CBORTag(item.tag, _thaw(item.value))
    if isinstance(item, list | tuple):
        return [_thaw(x) for x in item]
    if isinstance(item, Mapping):
        return {k: _thaw(v) for k, v in item.items()}
    return item


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one item head at ``pos``: (major type, argument, position after head)."""
    if pos >= len(data):
        raise BadCbor("truncated: item expected at end of input")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info == 31:
        raise BadCbor("indefinite-length items are not accepted")
    if info > 27:
        raise BadCbor(f"reserved additional information {info}")
    width = 1 << (info - 24)
    if pos + width > len(data):
        raise BadCbor("truncated item head")
    return major, int.from_bytes(data[pos : pos + width], "big"), pos + width


def _scan(data: bytes, pos: int, depth: int, max_depth: int) -> int:
    """Check one item structurally; return the position after it."""
    if depth > max_depth:
        raise BadCbor(f"nesting deeper than {max_depth}")
    major, arg, pos = _head(data, pos)
    if major in (_MAJOR_UINT, _MAJOR_NINT):
        return pos
    if major in (_MAJOR_BYTES, _MAJOR_TEXT):
        if arg > len(data) - pos:
            raise BadCbor("truncated string")
        return pos + arg
    if major == _MAJOR_ARRAY:
        if arg > len(data) - pos:  # every item takes at least one byte
            raise BadCbor("array longer than the input")
        for _ in range(arg):
            pos = _scan(data, pos, depth + 1, max_depth)
        return pos
    if major == _MAJOR_MAP:
        if 2 * arg > len(data) - pos:
            raise BadCbor("map longer than the input")
        seen: set[tuple[type, Any]] = set()
        for _ in range(arg):
            key_start = pos
            pos = _scan(data, pos, depth + 1, max_depth)
            key = _map_key(data[key_start:pos])
            if key in seen:
                raise BadCbor(f"duplicate map key {key[1]!r}")
            seen.add(key)
            pos = _scan(data, pos, depth + 1, max_depth)
        return pos
    if major == _MAJOR_TAG:
        return _scan(data, pos, depth + 1, max_depth)
    # major 7: simple values and floats; the head already consumed their bytes
    return pos


def _map_key(raw: bytes) -> tuple[type, Any]:
    try:
        key = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise BadCbor(f"undecodable map key: {exc}") from exc
    if isinstance(key, bool) or not isinstance(key, int | str | bytes):
        raise BadCbor(f"map key of type {type(key).__name__} is not accepted")
    return (type(key), key)
