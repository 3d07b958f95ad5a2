"""The agent's side of the serial link to the device firmware.

``FirmwareLink`` is the I/O boundary (bytes in, bytes out); ``SerialLink``
is the real one (pyserial on a tty or pty), ``InProcessLink`` runs an
emulator's ``feed`` in the same process through the same codec (for large
simulated fleets). ``FirmwareClient`` speaks :mod:`protocol.serial` over
any link: one request in flight, request ids, stale frames discarded,
retries on timeout and corruption, everything counted in ``counters``.

Errors: :class:`~protocol.errors.FirmwareUnavailable` when the port fails or
no valid answer came after the retries (its ``__cause__`` is the last
:class:`~protocol.errors.SerialTimeout` or frame error);
:class:`~protocol.errors.FirmwareErrorReply` when the firmware refused the
request; :class:`~protocol.errors.BadFrame` when a response has the wrong
shape. Nothing else escapes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import serial

from protocol import serial as codec
from protocol.errors import (
    BadCrc,
    BadFrame,
    FirmwareErrorReply,
    FirmwareUnavailable,
    FrameTooLarge,
    SerialFrameError,
    SerialTimeout,
)

__all__ = [
    "COUNTERS",
    "BAUDRATE",
    "Emulator",
    "FirmwareClient",
    "FirmwareLink",
    "InProcessLink",
    "SerialLink",
]

log = logging.getLogger(__name__)
BAUDRATE = 115_200
COUNTERS = (
    "requests",
    "crc_errors",
    "timeouts",
    "retries",
    "error_replies",
    "bad_frames",
    "frame_too_large",
    "garbage",
    "stale_frames",
    "skipped_bytes",
)
# what each frame error the codec raises is counted as (the rest are bad_frames)
_ERROR_COUNTERS: tuple[tuple[type[SerialFrameError], str], ...] = (
    (BadCrc, "crc_errors"),
    (FrameTooLarge, "frame_too_large"),
    (codec.Garbage, "garbage"),
)
_MAX_BUFFER = 4 * codec.MAX_FRAME


class FirmwareLink(Protocol):
    """Bytes to and from the firmware; one reader and one writer at a time."""

    async def send(self, data: bytes) -> None:
        """Write all of ``data``; raise FirmwareUnavailable if the port failed."""

    async def receive(self, *, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` as soon as any arrive; ``b""`` after ``timeout_s`` of silence."""

    async def close(self) -> None:
        """Release the port; later calls raise FirmwareUnavailable."""


class Emulator(Protocol):
    """What InProcessLink needs from a firmware emulator."""

    def feed(self, data: bytes) -> bytes: ...


class SerialLink:
    """A real serial port through pyserial; blocking calls run in a worker thread."""

    def __init__(self, port: str, *, baudrate: int = BAUDRATE, timeout_s: float = 1.0) -> None:
        try:
            self._serial = serial.Serial(port, baudrate=baudrate, timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise FirmwareUnavailable(
                f"cannot open serial port {port}: {exc}; check the device path and permissions"
            ) from exc
        self._port = port

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    async def receive(self, *, max_bytes: int, timeout_s: float) -> bytes:
        return await asyncio.to_thread(self._read, max_bytes, max(timeout_s, 0.0))

    async def close(self) -> None:
        port = self._serial
        if port.is_open:
            try:
                port.cancel_read()
            except (serial.SerialException, OSError, AttributeError):
                pass
            await asyncio.to_thread(port.close)

    def _write(self, data: bytes) -> None:
        try:
            if not self._serial.is_open:
                raise serial.SerialException("port is closed")
            self._serial.write(data)
            self._serial.flush()
        except (serial.SerialException, OSError, TypeError) as exc:
            raise FirmwareUnavailable(f"writing to {self._port} failed: {exc}") from exc

    def _read(self, max_bytes: int, timeout_s: float) -> bytes:
        port = self._serial
        try:
            if not port.is_open:
                raise serial.SerialException("port is closed")
            if port.timeout != timeout_s:
                port.timeout = timeout_s
            first = bytes(port.read(1))
            if not first:
                return b""
            waiting = min(port.in_waiting, max_bytes - 1)
            return first + (bytes(port.read(waiting)) if waiting > 0 else b"")
        except (serial.SerialException, OSError, TypeError) as exc:
            raise FirmwareUnavailable(f"reading from {self._port} failed: {exc}") from exc


class InProcessLink:
    """An emulator in this process: the same bytes and codec, no pty, no thread."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._pending = bytearray()
        self._arrived = asyncio.Event()
        self._closed = False

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise FirmwareUnavailable("the in-process link is closed")
        out = self._emulator.feed(bytes(data))
        if out:
            self._pending += out
            self._arrived.set()

    async def receive(self, *, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed:
            raise FirmwareUnavailable("the in-process link is closed")
        if not self._pending:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=max(timeout_s, 0.0))
            except TimeoutError:
                return b""
            if self._closed:
                raise FirmwareUnavailable("the in-process link is closed")
        chunk = bytes(self._pending[:max_bytes])
        del self._pending[:max_bytes]
        return chunk

    async def close(self) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        """Cut the link (as a pulled cable): pending and later calls fail."""
        self._closed = True
        self._arrived.set()


class FirmwareClient:
    """Requests to the firmware with ids, timeouts, retries and counters.

    Each attempt waits ``timeout_s`` for the response carrying the request's id;
    a timeout or a corrupted frame triggers a retry with the same id (the
    firmware answers a repeated id from its cache instead of running the
    request twice). ``retries`` retries after the first attempt, then
    FirmwareUnavailable.
    """

    def __init__(self, link: FirmwareLink, *, timeout_s: float = 1.0, retries: int = 2) -> None:
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be positive and retries not negative")
        self._link = link
        self._timeout_s = timeout_s
        self._retries = retries
        self._buffer = bytearray()
        # a restarted agent must not reuse the id of the firmware's cached last answer
        self._next_id = random.randrange(0x10000)
        self._lock = asyncio.Lock()
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._link.close()
        except FirmwareUnavailable:
            pass
        except Exception as exc:  # a link must not make shutdown fail
            log.warning("closing the firmware link failed: %s", exc)

    async def get_info(self) -> dict[str, Any]:
        return await self._call(codec.Op.GET_INFO, {})

    async def get_health(self) -> dict[str, Any]:
        return await self._call(codec.Op.GET_HEALTH, {})

    async def set_features(self, features: Mapping[str, Mapping[str, Any]]) -> None:
        body = {name: dict(params) for name, params in features.items()}
        await self._call(codec.Op.SET_FEATURES, {"features": body})

    async def self_test(self) -> dict[str, Any]:
        body = await self._call(codec.Op.SELF_TEST, {})
        try:
            return codec.check_self_test(body)
        except BadFrame:
            self.counters["bad_frames"] += 1
            raise

    async def get_log(self, *, max_bytes: int = 4096) -> str:
        body = await self._call(codec.Op.GET_LOG, {"max_bytes": max_bytes})
        text = body.get("log")
        if not isinstance(text, str):
            self.counters["bad_frames"] += 1
            raise BadFrame("GET_LOG response has no text log")
        return text

    async def reboot(self) -> None:
        await self._call(codec.Op.REBOOT, {})

    async def _call(self, op: codec.Op, body: Mapping[str, Any]) -> dict[str, Any]:
        async with self._lock:
            request_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFF
            data = codec.write(codec.request(op, request_id, body))
            self.counters["requests"] += 1
            last: Exception | None = None
            for attempt in range(self._retries + 1):
                if attempt:
                    self.counters["retries"] += 1
                await self._send(data)
                try:
                    return await self._await_response(op, request_id)
                except FirmwareErrorReply:
                    raise  # understood and refused: asking again changes nothing
                except (SerialTimeout, SerialFrameError) as exc:
                    last = exc
                    log.debug("firmware %s attempt %d: %s", op.name, attempt + 1, exc)
            raise FirmwareUnavailable(
                f"no valid answer to {op.name} after {self._retries + 1} attempts "
                f"({last}); check the cable and the device's power"
            ) from last

    async def _send(self, data: bytes) -> None:
        try:
            await self._link.send(data)
        except FirmwareUnavailable:
            raise
        except Exception as exc:
            raise FirmwareUnavailable(f"sending to the firmware failed: {exc}") from exc

    async def _await_response(self, op: codec.Op, request_id: int) -> dict[str, Any]:
        """Read until the response to ``request_id`` or the attempt's deadline.

        Raises SerialTimeout at the deadline, and the frame error when a frame
        was corrupted and no valid answer followed it in what had arrived
        (the answer may have been that frame: retrying beats waiting).
        Past the deadline, what has already arrived is read once more before it is
        called a timeout: an agent stalled beyond the deadline (a busy CPU, a GC
        pause) must not count an answer waiting in the buffer as a silent firmware.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        read_after_deadline = False
        while True:
            found, corrupted = self._drain(op, request_id)
            if found is not None:
                return found
            if corrupted is not None:
                raise corrupted
            remaining = deadline - loop.time()
            if remaining <= 0 and read_after_deadline:
                self.counters["timeouts"] += 1
                raise SerialTimeout(f"no answer to {op.name} within {self._timeout_s} s")
            read_after_deadline = remaining <= 0
            chunk = await self._receive(max(remaining, 0.0))
            if chunk:
                self._buffer += chunk
                if len(self._buffer) > _MAX_BUFFER:  # bounded even on a babbling line
                    overflow = len(self._buffer) - _MAX_BUFFER
                    del self._buffer[:overflow]
                    self.counters["skipped_bytes"] += overflow

    def _drain(
        self, op: codec.Op, request_id: int
    ) -> tuple[dict[str, Any] | None, SerialFrameError | None]:
        """Decode buffered frames up to this request's answer; count what else was there."""
        corrupted: SerialFrameError | None = None
        while self._buffer:
            try:
                frame, consumed = codec.read(self._buffer)
            except SerialFrameError as exc:
                dropped = max(exc.consumed, 1)
                del self._buffer[:dropped]
                self.counters["skipped_bytes"] += dropped
                key = next((k for t, k in _ERROR_COUNTERS if isinstance(exc, t)), "bad_frames")
                self.counters[key] += 1
                if not isinstance(exc, codec.Garbage):
                    # noise between frames says nothing about the answer; a broken frame may
                    # have been it, so asking again beats waiting out the timeout
                    corrupted = exc
                continue
            del self._buffer[:consumed]
            if frame is None:
                break
            if (
                frame.request_id == request_id
                and frame.op == op
                and frame.kind != codec.FrameKind.REQUEST
            ):
                return self._answer(frame), None
            self.counters["stale_frames"] += 1
        return None, corrupted

    def _answer(self, frame: codec.Frame) -> dict[str, Any]:
        if frame.kind == codec.FrameKind.ERROR:
            self.counters["error_replies"] += 1
            code, message = frame.body.get("code"), frame.body.get("message")
            raise FirmwareErrorReply(
                f"firmware refused {codec.Op(frame.op).name}: {message}",
                code=code if isinstance(code, str) else "unknown",
            )
        return frame.body

    async def _receive(self, timeout_s: float) -> bytes:
        try:
            return await self._link.receive(max_bytes=codec.MAX_FRAME, timeout_s=timeout_s)
        except FirmwareUnavailable:
            raise
        except Exception as exc:
            raise FirmwareUnavailable(f"reading from the firmware failed: {exc}") from exc
