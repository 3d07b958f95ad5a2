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
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BadCbor(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > max_size:
        raise TooLarge(f"{size} bytes is over the {max_size}-byte limit")
    if not size:
        raise BadCbor("empty input")
    end = _scan(data, max_depth)
    if end != size:
        raise BadCbor(f"{size - end} trailing bytes after the CBOR item")
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, OverflowError, TypeError) as exc:
        raise BadCbor(f"cbor2 refused the item: {exc}") from exc


def _leaf_sizes() -> tuple[int, ...]:
    """Bytes taken by the item an initial byte starts, when that byte alone fixes it.

    Integers, floats, short strings (length in the initial byte) and one-byte
    simple values; 0 for everything else (long strings, containers, tags, the
    two-byte simple value, which needs a check, and the malformed bytes).
    """
    sizes = []
    for initial in range(256):
        major, arg = initial >> 5, initial & 0x1F
        size = 0
        if major <= _MAJOR_NINT or major == _MAJOR_SIMPLE:
            if arg < 24:
                size = 1
            elif 24 <= arg <= 27 and not (major == _MAJOR_SIMPLE and arg == 24):
                size = 1 + (1 << (arg - 24))
        elif major <= _MAJOR_TEXT and arg < 24:
            size = 1 + arg
        sizes.append(size)
    return tuple(sizes)


_LEAF_SIZE = _leaf_sizes()


def _scan(data: bytes, max_depth: int) -> int:
    """Check one item structurally; return the position after it.

    Iterative (an explicit stack of open containers) because this runs on
    every token and Python calls per item cost more than the checks. Most
    items are leaves whose size the initial byte alone gives (``_LEAF_SIZE``);
    the loop skips those in a few steps and reads the rest in full.
    A leaf that runs past the end leaves ``pos > size``: the next item's
    ``data[pos]`` raises IndexError, or the final check refuses it.
    """
    size = len(data)
    pos = 0
    leaf_size = _LEAF_SIZE
    # Open containers: (items or pairs still to read, seen keys if it is a map).
    stack: list[tuple[int, set[Any] | None]] = []
    remaining = 1  # items left in an array, pairs left in a map
    seen: set[Any] | None = None
    try:
        while True:
            if not remaining:
                if not stack:
                    break
                remaining, seen = stack.pop()
                continue
            remaining -= 1
            initial = data[pos]
            if seen is not None:
                # A map entry: the key first. Keys compare by value whatever the
                # length of their encoding: an integer as its value, text as its
                # UTF-8 bytes (injective; cbor2 refuses invalid UTF-8) and a byte
                # string as a tuple, so no two kinds compare equal.
                key: Any
                if 0x60 <= initial < 0x78:  # text, length in the initial byte
                    end = pos + initial - 0x5F
                    if end > size:
                        raise BadCbor("truncated string")
                    key = data[pos + 1 : end]
                    pos = end
                elif initial < 0x18:  # unsigned integer below 24
                    key = initial
                    pos += 1
                elif 0x20 <= initial < 0x38:  # negative integer -1 to -24
                    key = 0x1F - initial
                    pos += 1
                else:
                    major, arg = initial >> 5, initial & 0x1F
                    pos += 1
                    if arg >= 24:
                        arg, pos = _long_arg(data, pos, size, major, arg)
                    if major > _MAJOR_TEXT:
                        raise BadCbor("map keys must be integers, text or byte strings")
                    if major >= _MAJOR_BYTES:
                        if arg > size - pos:
                            raise BadCbor("truncated string")
                        key = data[pos : pos + arg]
                        if major == _MAJOR_BYTES:
                            key = (_MAJOR_BYTES, key)
                        pos += arg
                    else:
                        key = arg if major == _MAJOR_UINT else -1 - arg
                if key in seen:
                    raise BadCbor(f"duplicate map key {key!r}")
                seen.add(key)
                initial = data[pos]
            step = leaf_size[initial]
            if step:
                pos += step
                continue
            major, arg = initial >> 5, initial & 0x1F
            pos += 1
            if arg >= 24:
                if arg == 24 and major != _MAJOR_SIMPLE:
                    arg = data[pos]
                    pos += 1
                else:
                    arg, pos = _long_arg(data, pos, size, major, arg)
            if major == _MAJOR_SIMPLE:
                continue  # the two-byte simple value: its head is the whole item
            if major <= _MAJOR_TEXT:  # a string too long for the initial byte
                if arg > size - pos:
                    raise BadCbor("truncated string")
                pos += arg
                continue
            if major == _MAJOR_TAG:
                if arg not in ALLOWED_TAGS:
                    raise BadCbor(f"CBOR tag {arg} is not accepted")
                children = 1
            else:
                children = arg if major == _MAJOR_ARRAY else 2 * arg
            if children > size - pos:  # every item takes at least one byte
                raise BadCbor("container longer than the input")
            # the children sit at depth len(stack) + 1; an empty container has none
            if children and len(stack) >= max_depth:
                raise BadCbor(f"nesting deeper than {max_depth}")
            stack.append((remaining, seen))
            remaining = arg if major != _MAJOR_TAG else 1
            seen = set() if major == _MAJOR_MAP else None
    except IndexError:
        raise BadCbor("truncated: an item runs past the end of input") from None
    if pos > size:
        raise BadCbor("truncated: an item runs past the end of input")
    return pos


def _long_arg(data: bytes, pos: int, size: int, major: int, arg: int) -> tuple[int, int]:
    """Read the argument that follows an initial byte with additional info ``arg`` >= 24.

    ``pos`` is just after the initial byte; returns (argument, position after the
    head). Refuses indefinite lengths, reserved additional information, a
    truncated head and two-byte simple values below 32 (not well-formed).
    """
    if arg == 31:
        raise BadCbor("indefinite-length items are not accepted")
    if arg > 27:
        raise BadCbor(f"reserved additional information {arg}")
    head_end = pos + (1 << (arg - 24))
    if head_end > size:
        raise BadCbor("truncated item head")
    if major == _MAJOR_SIMPLE and arg == 24 and data[pos] < 32:
        raise BadCbor("two-byte simple value below 32 is not well-formed")
    return int.from_bytes(data[pos:head_end], "big"), head_end
