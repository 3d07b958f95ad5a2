"""Device firmware emulators speaking the serial protocol, one per device kind.

``Emulator.feed(bytes) -> bytes`` answers requests framed by
:mod:`protocol.serial`; ``GatewayEmulator``, ``CameraEmulator`` and
``CounterEmulator`` add their kind's stats, features and faults; ``Faults``
holds the fault knobs; ``PtyFirmware`` serves any of them on a
pseudo-terminal for pyserial. ``python -m firmware_stubs --kind camera``
serves one from the command line. See docs/serial-protocol.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_stubs.camera import CameraEmulator
from firmware_stubs.counter import CounterEmulator
from firmware_stubs.emulator import Emulator, Faults, Refused
from firmware_stubs.gateway import GatewayEmulator
from firmware_stubs.pty import PtyFirmware

__all__ = [
    "KINDS",
    "CameraEmulator",
    "CounterEmulator",
    "Emulator",
    "Faults",
    "GatewayEmulator",
    "PtyFirmware",
    "Refused",
    "make_emulator",
]

KINDS = ("gateway", "camera", "counter")


def make_emulator(kind: str, *, recordings: Path | None = None, **kwargs: Any) -> Emulator:
    """An emulator of ``kind``; a camera needs ``recordings`` (its folder)."""
    if kind == "gateway":
        return GatewayEmulator(**kwargs)
    if kind == "camera":
        if recordings is None:
            raise ValueError("a camera emulator needs a recordings folder")
        return CameraEmulator(recordings=recordings, **kwargs)
    if kind == "counter":
        return CounterEmulator(**kwargs)
    raise ValueError(f"unknown device kind {kind!r}: use one of {', '.join(KINDS)}")
