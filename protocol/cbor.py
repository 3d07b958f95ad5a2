"""Strict CBOR decoding for untrusted input.

cbor2 decodes whatever is well-formed; a verifier needs less. Before cbor2
sees the bytes, a structural scan (headers only, no values built) refuses
what the protocol never emits: input over the size limit, indefinite
lengths, nesting deeper than a small bound, reserved additional-info values,
two-byte simple values below 32 (not well-formed), tags other than COSE_Sign1
(18) and COSE_Sign (98), duplicate map keys, map keys that are not
int/text/bytes, and trailing bytes.

Refusing other tags keeps cbor2's semantic decoders away from untrusted
bytes: value sharing (tags 28/29) builds cyclic objects, decimal fractions
raise ``decimal`` errors, and sets or tagged keys make cbor2 return tuples and
frozendicts. With only int/text/bytes keys and tags 18/98, cbor2 returns plain
lists and dicts.
"""

from __future__ import annotations

from typing import Any

import cbor2

from protocol.errors import BadCbor, TooLarge

__all__ = ["ALLOWED_TAGS", "MAX_DEPTH", "decode", "encode"]

MAX_DEPTH = 16
ALLOWED_TAGS = frozenset({18, 98})

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
    end = _scan(data, max_depth)
    if end != len(data):
        raise BadCbor(f"{len(data) - end} trailing bytes after the CBOR item")
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, OverflowError, TypeError) as exc:
        raise BadCbor(f"cbor2 refused the item: {exc}") from exc


def _scan(data: bytes, max_depth: int) -> int:
    """Check one item structurally; return the position after it.

    Iterative (an explicit stack of open containers) because this runs on
    every token and Python calls per item cost more than the checks.
    """
    size = len(data)
    pos = 0
    # Open containers: (items still to read, seen keys if it is a map).
    stack: list[tuple[int, set[tuple[int, Any]] | None]] = []
    remaining = 1
    seen: set[tuple[int, Any]] | None = None
    while True:
        if not remaining:
            if not stack:
                return pos
            remaining, seen = stack.pop()
            continue
        if pos >= size:
            raise BadCbor("truncated: item expected at end of input")
        initial = data[pos]
        major, arg = initial >> 5, initial & 0x1F
        pos += 1
        # In a map, items alternate key, value: a key is read when an even count is left.
        is_key = seen is not None and not remaining & 1
        remaining -= 1
        if arg >= 24:
            if arg == 31:
                raise BadCbor("indefinite-length items are not accepted")
            if arg > 27:
                raise BadCbor(f"reserved additional information {arg}")
            head_end = pos + (1 << (arg - 24))
            if head_end > size:
                raise BadCbor("truncated item head")
            if major == _MAJOR_SIMPLE and arg == 24 and data[pos] < 32:
                raise BadCbor("two-byte simple value below 32 is not well-formed")
            arg = int.from_bytes(data[pos:head_end], "big")
            pos = head_end
        if major <= _MAJOR_TEXT:
            value: Any = arg
            if major >= _MAJOR_BYTES:
                if arg > size - pos:
                    raise BadCbor("truncated string")
                value = data[pos : pos + arg] if is_key else None
                pos += arg
            if is_key:
                # Integers compare by value whatever the length of their encoding;
                # text by its UTF-8 bytes (injective; cbor2 refuses invalid UTF-8).
                key = (major, value)
                assert seen is not None
                if key in seen:
                    raise BadCbor(f"duplicate map key {value!r}")
                seen.add(key)
            continue
        if is_key:
            raise BadCbor("map keys must be integers, text or byte strings")
        if major == _MAJOR_SIMPLE:
            continue  # simple values and floats: the head was the whole item
        if major == _MAJOR_TAG and arg not in ALLOWED_TAGS:
            raise BadCbor(f"CBOR tag {arg} is not accepted")
        children = 1 if major == _MAJOR_TAG else arg if major == _MAJOR_ARRAY else 2 * arg
        if children > size - pos:  # every item takes at least one byte
            raise BadCbor("container longer than the input")
        # the children sit at depth len(stack) + 1; an empty container has none
        if children and len(stack) >= max_depth:
            raise BadCbor(f"nesting deeper than {max_depth}")
        stack.append((remaining, seen))
        remaining, seen = children, (set() if major == _MAJOR_MAP else None)
