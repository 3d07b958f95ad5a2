"""Framing of the agent ↔ firmware serial link (see docs/serial-protocol.md).

A pure codec in the shape every framed format here has: ``read(buf) ->
(frame | None, consumed)`` and ``write(frame) -> bytes``. One frame::

    A5 5A | ver | op | flags | request id (u16) | length (u16) | CBOR map | CRC-16
    '----------------- header, 9 bytes ----------------------'

Multi-byte integers are big-endian. The CRC is CRC-16/CCITT-FALSE (poly
0x1021, init 0xFFFF; ``binascii.crc_hqx``) over header and payload. The
payload is one CBOR map with text keys, decoded by :mod:`protocol.cbor`'s
strict decoder, so it must fill the announced length exactly: CBOR is
self-delimiting, which makes the payload a second, independent check of the
length field (a length corrupted to a smaller or larger value leaves a
truncated item or trailing bytes even in the 1 in 65 536 case where the CRC
read from the wrong place happens to match).

The reader resynchronises and accounts for every byte it drops: bytes
before a start marker raise :class:`Garbage` (``consumed`` = their number);
a bad frame raises a :class:`~protocol.errors.SerialFrameError` leaf whose
``consumed`` drops only the first marker byte, so a real frame hidden behind
a false marker is found on the next read (the rest of the bad frame then
comes out as garbage). A reader that adds up ``consumed`` of every error has
counted every byte that was not part of a frame.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import cbor2

from protocol import cbor
from protocol.errors import (
    BadCrc,
    BadFrame,
    DecodeError,
    FrameTooLarge,
    Garbage,
    SerialFrameError,
)

__all__ = [
    "CRC_SIZE",
    "FAULT_CODES",
    "HEADER_SIZE",
    "MAX_FRAME",
    "MAX_PAYLOAD",
    "SOF",
    "VERSION",
    "ErrorCode",
    "FaultCode",
    "Frame",
    "FrameKind",
    "Garbage",
    "Op",
    "check_self_test",
    "crc16",
    "error_reply",
    "read",
    "read_all",
    "request",
    "response",
    "write",
]

SOF = b"\xa5\x5a"
VERSION = 1
MAX_PAYLOAD = 4096
_HEADER = struct.Struct(">2sBBBHH")
HEADER_SIZE = _HEADER.size
CRC_SIZE = 2
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
_CRC_INIT = 0xFFFF


class Op(IntEnum):
    """What a request asks for; a response carries the op of its request."""

    GET_INFO = 0x01
    GET_HEALTH = 0x02
    SET_FEATURES = 0x03
    SELF_TEST = 0x04
    GET_LOG = 0x05
    REBOOT = 0x06


class FrameKind(IntEnum):
    """The flags byte: bit 0 = response, bit 1 = error (only on a response)."""

    REQUEST = 0x00
    RESPONSE = 0x01
    ERROR = 0x03


class ErrorCode:
    """Codes an ERROR frame's ``code`` may carry."""

    UNKNOWN_OP = "unknown_op"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED = "unsupported"
    BUSY = "busy"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class FaultCode:
    """What a self-test fault code means for whoever decides on an RMA."""

    hardware: bool
    action: str


# The self-test contract: every code a firmware may report, whether it is a
# hardware fault (RMA once confirmed) and what fixes it otherwise.
FAULT_CODES: Mapping[str, FaultCode] = {
    "fan_failure": FaultCode(hardware=True, action="rma"),
    "disk_reallocated_sectors": FaultCode(hardware=True, action="rma"),
    "sensor_failure": FaultCode(hardware=True, action="rma"),
    "lens_obstructed": FaultCode(hardware=False, action="clean_lens"),
    "reboot_loop": FaultCode(hardware=False, action="firmware_update"),
    "line_noise": FaultCode(hardware=False, action="check_cable"),
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``op`` stays an int when it is not an :class:`Op`."""

    op: int
    request_id: int
    kind: FrameKind = FrameKind.REQUEST
    body: dict[str, Any] = field(default_factory=dict)


def request(op: Op, request_id: int, body: Mapping[str, Any] | None = None) -> Frame:
    return Frame(op=op, request_id=request_id, kind=FrameKind.REQUEST, body=dict(body or {}))


def response(op: int, request_id: int, body: Mapping[str, Any] | None = None) -> Frame:
    return Frame(op=op, request_id=request_id, kind=FrameKind.RESPONSE, body=dict(body or {}))


def error_reply(op: int, request_id: int, *, code: str, message: str) -> Frame:
    body = {"code": code, "message": message}
    return Frame(op=op, request_id=request_id, kind=FrameKind.ERROR, body=body)


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    return binascii.crc_hqx(data, _CRC_INIT)


def write(frame: Frame) -> bytes:
    """Encode one frame.

    Raises:
        FrameTooLarge: the encoded body is over :data:`MAX_PAYLOAD`.
        ValueError: op or request id out of range (a caller bug, not line data).
        TypeError: the body holds something CBOR cannot encode (a caller bug).
    """
    if not 0 <= frame.op <= 0xFF:
        raise ValueError(f"op {frame.op} is not a byte")
    if not 0 <= frame.request_id <= 0xFFFF:
        raise ValueError(f"request id {frame.request_id} is not a u16")
    try:
        payload = cbor.encode(dict(frame.body))
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise TypeError(f"frame body cannot be encoded as CBOR: {exc}") from exc
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    header = _HEADER.pack(SOF, VERSION, frame.op, int(frame.kind), frame.request_id, len(payload))
    return header + payload + crc16(header + payload).to_bytes(CRC_SIZE, "big")


def read(buf: bytes | bytearray) -> tuple[Frame | None, int]:
    """Decode the first frame in ``buf``.

    Returns ``(frame, consumed)``, or ``(None, 0)`` when no complete frame is
    there yet: the caller drops ``consumed`` bytes and keeps the rest for the
    next call. Nothing is dropped silently: bytes before the first start
    marker raise :class:`Garbage`.

    Raises:
        SerialFrameError: a leaf (Garbage, BadCrc, FrameTooLarge, BadFrame)
            whose ``consumed`` (at least 1) the caller drops before reading on.
    """
    start = buf.find(SOF)
    if start < 0:
        # a trailing first marker byte may be the start of a marker
        start = len(buf) - (1 if buf[-1:] == SOF[:1] else 0)
    if start > 0:
        raise Garbage(f"{start} bytes outside any frame", consumed=start)
    if len(buf) < HEADER_SIZE:
        return None, 0
    # from here the buffer starts with a marker: an error drops that first byte only
    _, version, op, flags, request_id, length = _HEADER.unpack_from(buf)
    _check_header(version, flags, length, consumed=1)
    end = HEADER_SIZE + length + CRC_SIZE
    if len(buf) < end:
        later = _complete_frame_after(buf, 1)
        if later is not None:
            # A false marker announced more bytes than ever came; a whole frame
            # that arrived after it proves it so.
            raise BadFrame(
                f"partial frame overtaken by a complete frame {later} bytes on", consumed=later
            )
        return None, 0
    crc = int.from_bytes(buf[end - CRC_SIZE : end], "big")
    if crc16(buf[: end - CRC_SIZE]) != crc:
        raise BadCrc("CRC mismatch", consumed=1)
    # On a bad body too only the marker byte goes: in the 1 in 65 536 case of a
    # corrupted length whose CRC still matched, a real frame may start inside.
    body = _decode_body(bytes(buf[HEADER_SIZE : end - CRC_SIZE]), consumed=1)
    return Frame(op=_op(op), request_id=request_id, kind=FrameKind(flags), body=body), end


def read_all(buf: bytes | bytearray) -> tuple[list[Frame | SerialFrameError], int]:
    """Every frame in ``buf`` in order, each bad one as its error, and the bytes consumed."""
    results: list[Frame | SerialFrameError] = []
    pos = 0
    view = bytes(buf)
    while pos < len(view):
        try:
            frame, consumed = read(view[pos:])
        except SerialFrameError as exc:
            results.append(exc)
            pos += max(exc.consumed, 1)
            continue
        pos += consumed
        if frame is None:
            break
        results.append(frame)
    return results, pos


def check_self_test(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a SELF_TEST response body if it has the documented shape.

    ``{"passed": bool, "hardware_fault": bool,
    "faults": [{"component": str, "code": str, "detail": str}, ...]}``

    Raises:
        BadFrame: any other shape.
    """
    passed, hardware, faults = body.get("passed"), body.get("hardware_fault"), body.get("faults")
    if not isinstance(passed, bool) or not isinstance(hardware, bool):
        raise BadFrame("self-test result needs boolean passed and hardware_fault")
    if not isinstance(faults, list):
        raise BadFrame("self-test result needs a faults list")
    for fault in faults:
        if not isinstance(fault, dict) or not all(
            isinstance(fault.get(key), str) for key in ("component", "code", "detail")
        ):
            raise BadFrame("each self-test fault needs text component, code and detail")
    return {"passed": passed, "hardware_fault": hardware, "faults": faults}


def _op(value: int) -> int:
    try:
        return Op(value)
    except ValueError:
        return value


def _check_header(version: int, flags: int, length: int, *, consumed: int) -> None:
    if version != VERSION:
        raise BadFrame(f"protocol version {version} is not {VERSION}", consumed=consumed)
    if flags not in _KINDS:
        raise BadFrame(f"flags {flags:#04x} are not a known frame kind", consumed=consumed)
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(f"payload length {length} is over {MAX_PAYLOAD}", consumed=consumed)


_KINDS = frozenset(int(kind) for kind in FrameKind)


def _complete_frame_after(buf: bytes | bytearray, pos: int) -> int | None:
    """Offset of the first whole frame with a good CRC at or after ``pos``, if any."""
    while (start := buf.find(SOF, pos)) >= 0 and len(buf) - start >= HEADER_SIZE:
        pos = start + 1
        _, version, _, flags, _, length = _HEADER.unpack_from(buf, start)
        end = start + HEADER_SIZE + length + CRC_SIZE
        if version != VERSION or flags not in _KINDS or length > MAX_PAYLOAD or end > len(buf):
            continue
        if crc16(buf[start : end - CRC_SIZE]) == int.from_bytes(buf[end - CRC_SIZE : end], "big"):
            return start
    return None


def _decode_body(payload: bytes, *, consumed: int) -> dict[str, Any]:
    try:
        body = cbor.decode(payload, max_size=MAX_PAYLOAD)
    except DecodeError as exc:
        raise BadFrame(f"payload is not strict CBOR: {exc}", consumed=consumed) from exc
    if not isinstance(body, dict) or not all(isinstance(key, str) for key in body):
        raise BadFrame("payload is not a CBOR map with text keys", consumed=consumed)
    return body
