"""The firmware emulator's core: request bytes in, response bytes out.

``Emulator.feed`` decodes requests with :mod:`protocol.serial`, answers each
one and encodes the answers with the same codec, so every link (a pty, or
in-process for large fleets) carries exactly what real firmware would send.
Time comes from the injected ``now`` clock; emulated wear (uptime, reboot
loops, disk errors, kind-specific counters) advances from it on every request.

Fault knobs (:class:`Faults`): hardware faults, which the self-test reports
with ``hardware_fault`` true (an RMA case), are ``overheating`` (fan failure),
``disk_write_errors`` (reallocated sectors) and ``zero_counts`` (the counter's
sensor failed); remotely fixable are ``lens_obstruction`` (clean the lens),
``reboot_loop`` (update the firmware) and ``noisy_line`` (check the cable);
``silent`` never answers. The codes are ``protocol.serial.FAULT_CODES``; the
full table is in docs/serial-protocol.md.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from protocol import serial as codec
from protocol.errors import SerialFrameError

__all__ = ["FIRMWARE_VERSION", "Emulator", "Faults", "Refused"]

log = logging.getLogger(__name__)
FIRMWARE_VERSION = "2.4.1"
_LOG_LINES = 256
_LOG_TEXT_MAX = codec.MAX_PAYLOAD - 64  # room for the CBOR map around the text


@dataclass(slots=True)
class Faults:
    """Fault knobs; mutable so a test or simulator can break a running device."""

    overheating: bool = False
    disk_write_errors: bool = False
    lens_obstruction: bool = False
    zero_counts: bool = False
    reboot_loop: bool = False
    noisy_line: float = 0.0  # fraction of output bytes with one bit flipped
    silent: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.noisy_line <= 1.0:
            raise ValueError("noisy_line is a fraction of bytes, 0.0 to 1.0")


class Refused(Exception):
    """A request the firmware answers with an ERROR frame (``code`` from ErrorCode)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Emulator:
    """One device's firmware. Subclasses add their kind's stats, faults and features."""

    kind: ClassVar[str] = "device"
    model: ClassVar[str] = "EMU-0"
    REBOOT_LOOP_PERIOD_S: ClassVar[float] = 90.0
    DISK_ERROR_PERIOD_S: ClassVar[float] = 60.0
    # a device without its own disk writes fails one log flush per period with
    # the disk fault; the camera fails recording writes instead
    DISK_ERRORS_OVER_TIME: ClassVar[bool] = True

    def __init__(
        self,
        *,
        serial_number: str = "EMU-000001",
        faults: Faults | None = None,
        now: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        self.serial_number = serial_number
        self.faults = faults if faults is not None else Faults()
        self._now = now
        self._rng = random.Random(seed)
        self._inbox = bytearray()
        self._last_answer: tuple[int, int, bytes] | None = None
        self._log: deque[str] = deque(maxlen=_LOG_LINES)
        self.features: dict[str, dict[str, Any]] = {}
        self.rx_errors = 0
        self.write_errors = 0
        self.reallocated = 0
        self.reboots = 0
        self.last_reboot_reason: str | None = None
        start = now()
        self._boot = start
        self._last_tick = start
        self._disk_error_budget = 0.0
        self.log("info", f"boot: {self.model} fw {FIRMWARE_VERSION} serial {serial_number}")

    # -- the wire -----------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the host; return the bytes the firmware sends back."""
        if self.faults.silent:
            self._inbox.clear()
            return b""
        self._inbox += data
        out = bytearray()
        while self._inbox:
            try:
                frame, consumed = codec.read(self._inbox)
            except SerialFrameError as exc:
                del self._inbox[: max(exc.consumed, 1)]
                if not isinstance(exc, codec.Garbage):  # rx_errors counts broken requests
                    self.rx_errors += 1
                    self.log("warn", f"serial rx: {exc.reason}")
                continue
            del self._inbox[:consumed]
            if frame is None:
                break
            if frame.kind == codec.FrameKind.REQUEST:
                out += self._answer(frame)
        return self._corrupt(bytes(out))

    def _answer(self, frame: codec.Frame) -> bytes:
        last = self._last_answer
        if last is not None and last[:2] == (frame.request_id, frame.op):
            return last[2]  # a retry: answer again, do not run it twice
        after: Callable[[], None] | None = None
        try:
            try:
                self.tick()
                body, after = self._dispatch(frame)
                data = codec.write(codec.response(frame.op, frame.request_id, body))
            except (OSError, ValueError, TypeError) as exc:  # e.g. the recordings disk
                log.exception("firmware emulator failed on op %s", frame.op)
                raise Refused(codec.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}") from exc
        except Refused as exc:
            self.log("warn", f"refused op {frame.op}: {exc.code}")
            reply = codec.error_reply(
                frame.op, frame.request_id, code=exc.code, message=exc.message[:200]
            )
            data = codec.write(reply)
        self._last_answer = (frame.request_id, frame.op, data)
        if after is not None:
            after()
        return data

    def _corrupt(self, data: bytes) -> bytes:
        rate = self.faults.noisy_line
        if not rate or not data:
            return data
        noisy = bytearray(data)
        for index in range(len(noisy)):
            if self._rng.random() < rate:
                noisy[index] ^= 1 << self._rng.randrange(8)
        return bytes(noisy)

    def _dispatch(self, frame: codec.Frame) -> tuple[dict[str, Any], Callable[[], None] | None]:
        op = frame.op
        if op == codec.Op.GET_INFO:
            return self.info(), None
        if op == codec.Op.GET_HEALTH:
            return self.health(), None
        if op == codec.Op.SET_FEATURES:
            features = frame.body.get("features")
            if not isinstance(features, dict) or not all(
                isinstance(params, dict) for params in features.values()
            ):
                raise Refused(codec.ErrorCode.BAD_REQUEST, "features must map names to maps")
            self.set_features(features)
            return {"applied": sorted(self.features)}, None
        if op == codec.Op.SELF_TEST:
            return self.self_test(), None
        if op == codec.Op.GET_LOG:
            max_bytes = frame.body.get("max_bytes", codec.MAX_PAYLOAD)
            if type(max_bytes) is not int or max_bytes < 1:
                raise Refused(codec.ErrorCode.BAD_REQUEST, "max_bytes must be a positive int")
            text, truncated = self.log_text(max_bytes)
            return {"log": text, "truncated": truncated}, None
        if op == codec.Op.REBOOT:
            return {"rebooting": True}, lambda: self.reboot("requested")
        raise Refused(codec.ErrorCode.UNKNOWN_OP, f"op {op:#04x} is not supported")

    # -- behaviour ----------------------------------------------------------

    def now(self) -> float:
        return self._now()

    def tick(self) -> None:
        """Advance the emulated device to the clock's time."""
        now = self._now()
        elapsed = max(now - self._last_tick, 0.0)
        if self.faults.reboot_loop:
            resets = int((now - self._boot) // self.REBOOT_LOOP_PERIOD_S)
            if resets > 0:
                self.reboots += resets
                self.last_reboot_reason = "watchdog"
                self._boot += resets * self.REBOOT_LOOP_PERIOD_S
                self.features_lost()
                self.log("error", f"watchdog reset x{resets}: main loop stalled")
        if self.faults.disk_write_errors and self.DISK_ERRORS_OVER_TIME:
            self._disk_error_budget += elapsed / self.DISK_ERROR_PERIOD_S
            errors = int(self._disk_error_budget)
            self._disk_error_budget -= errors
            for _ in range(errors):
                self.disk_write_failed("log flush")
        self.advance(self._last_tick, now)
        self._last_tick = max(now, self._last_tick)

    def advance(self, before: float, now: float) -> None:
        """Kind-specific wear between two ticks."""

    def disk_write_failed(self, what: str) -> None:
        self.write_errors += 1
        self.reallocated = 64 + 8 * self.write_errors
        self.log("error", f"disk write failed ({what}): I/O error, sector reallocated")

    def reboot(self, reason: str) -> None:
        self.reboots += 1
        self.last_reboot_reason = reason
        self._boot = self._now()
        self.features_lost()
        self.log("info", f"reboot ({reason})")

    def features_lost(self) -> None:
        """A reboot clears the feature switches (RAM only): the host must push them again."""
        self.features = {}

    def uptime_s(self) -> int:
        return max(int(self._now() - self._boot), 0)

    def cpu_temp_c(self) -> float:
        return 93.5 if self.faults.overheating else 47.5

    def fan_rpm(self) -> int:
        return 0 if self.faults.overheating else 2400

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "serial_number": self.serial_number,
            "fw": FIRMWARE_VERSION,
            "hw_rev": "B",
            "protocol": codec.VERSION,
            "boot_count": self.reboots + 1,
            "features": self.features,
        }

    def health(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fw": FIRMWARE_VERSION,
            "uptime_s": self.uptime_s(),
            "reboots": {"count": self.reboots, "last_reason": self.last_reboot_reason},
            "cpu_temp_c": self.cpu_temp_c(),
            "mem_used_pct": 41.0,
            "disk": {
                "used_pct": self.disk_used_pct(),
                "write_errors": self.write_errors,
                "reallocated": self.reallocated,
            },
            "serial": {"rx_errors": self.rx_errors},
            "kind_specific": self.kind_health(),
        }

    def disk_used_pct(self) -> float:
        return 12.0

    def kind_health(self) -> dict[str, Any]:
        return {}

    def set_features(self, features: dict[str, dict[str, Any]]) -> None:
        """Apply the entitled features (the whole set: a missing one is switched off)."""
        self.features = {name: dict(params) for name, params in features.items()}
        self.log("info", f"features: {', '.join(sorted(self.features)) or 'none'}")

    def self_test(self) -> dict[str, Any]:
        faults = self.faults_found()
        hardware = any(codec.FAULT_CODES[fault["code"]].hardware for fault in faults)
        self.log("info", f"self-test: {len(faults)} fault(s)")
        return {"passed": not faults, "hardware_fault": hardware, "faults": faults}

    def faults_found(self) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        if self.faults.overheating:
            found.append(
                _fault(
                    "thermal",
                    "fan_failure",
                    f"fan at {self.fan_rpm()} rpm, CPU at {self.cpu_temp_c()} C: "
                    "the fan has failed (hardware)",
                )
            )
        if self.faults.disk_write_errors:
            found.append(
                _fault(
                    "storage",
                    "disk_reallocated_sectors",
                    f"{self.reallocated} reallocated sectors, {self.write_errors} write errors: "
                    "the disk is failing (hardware)",
                )
            )
        if self.faults.reboot_loop:
            found.append(
                _fault(
                    "firmware",
                    "reboot_loop",
                    f"{self.reboots} watchdog resets, none older than "
                    f"{int(self.REBOOT_LOOP_PERIOD_S)} s uptime: not hardware, "
                    "update the firmware",
                )
            )
        if self.faults.noisy_line:
            found.append(
                _fault(
                    "serial",
                    "line_noise",
                    "loopback shows corrupted bytes on the serial line: not hardware, "
                    "check the cable and its connectors",
                )
            )
        return found

    # -- log ----------------------------------------------------------------

    def log(self, level: str, message: str) -> None:
        stamp = datetime.fromtimestamp(self._now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._log.append(f"{stamp} {level.upper()} {message}")

    def log_text(self, max_bytes: int) -> tuple[str, bool]:
        """The most recent whole lines that fit in ``max_bytes`` (and in one frame)."""
        limit = min(max_bytes, _LOG_TEXT_MAX)
        lines: list[str] = []
        size = 0
        for line in reversed(self._log):
            cost = len(line.encode()) + (1 if lines else 0)
            if size + cost > limit:
                break
            lines.append(line)
            size += cost
        return "\n".join(reversed(lines)), len(lines) < len(self._log)


def _fault(component: str, code: str, detail: str) -> dict[str, str]:
    return {"component": component, "code": code, "detail": detail}
