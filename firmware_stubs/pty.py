"""Serve an emulator on a pseudo-terminal, so pyserial talks to it like a real port.

``PtyFirmware`` opens a pty pair in raw mode, keeps the slave side open (so
the master never sees a hang-up while no client is attached) and runs the
emulator on the master side in a background thread. ``port`` is the slave
path to hand to ``serial.Serial``. Closing it closes both sides: a client
still attached then reads EIO, as from an unplugged USB adapter.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import tty
from types import TracebackType
from typing import Self

from firmware_stubs.emulator import Emulator

__all__ = ["PtyFirmware"]

log = logging.getLogger(__name__)
_CHUNK = 4096


class PtyFirmware:
    """An emulator behind a pty; use as a context manager."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._master = -1
        self._slave = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = ""

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("PtyFirmware already started")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, no CR/LF mapping
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        self.port = os.ttyname(self._slave)
        self._thread = threading.Thread(
            target=self._serve, name=f"pty-firmware-{self.emulator.kind}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close the pty; safe to call twice."""
        if self._thread is None:
            return
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join()
        self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _serve(self) -> None:
        pending = bytearray()
        while not self._stop.is_set():
            writers = [self._master] if pending else []
            readable, writable, _ = select.select([self._master, self._wake_r], writers, [])
            if self._wake_r in readable:
                return
            if self._master in readable:
                try:
                    data = os.read(self._master, _CHUNK)
                except BlockingIOError:
                    data = b""
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        log.error("pty firmware stopped: %s", exc)
                        return
                    data = b""
                if data:
                    try:
                        pending += self.emulator.feed(data)
                    except Exception:  # the emulator's bug must not take the port down
                        log.exception("firmware emulator failed on %d bytes", len(data))
            if pending and (self._master in writable or not writers):
                try:
                    written = os.write(self._master, pending)
                except BlockingIOError:
                    written = 0
                except OSError as exc:
                    log.error("pty firmware stopped: %s", exc)
                    return
                del pending[:written]
