"""Push the entitled features to the device firmware over the serial link.

The firmware holds the feature switches; it forgets them when it reboots and
misses them while the link is down. So the enforcer keeps the desired set
and a "dirty" flag: a change of decisions, a failed push, a failed probe of
the link or a reboot the firmware reports all make it dirty, and the
background loop pushes (SET_FEATURES) until a push succeeds. Failures are
counted by reason, retried, and never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from agent.enforcers.entitled import entitled_features
from agent.verifier import TrustState
from common.clock import Clock
from protocol.errors import EntitleError

__all__ = ["FirmwareEnforcer", "FirmwareFeatures"]

log = logging.getLogger(__name__)


class FirmwareFeatures(Protocol):
    """The part of :class:`agent.firmware.FirmwareClient` this enforcer uses."""

    async def get_info(self) -> dict[str, Any]: ...

    async def set_features(self, features: dict[str, dict[str, Any]]) -> None: ...


def _boot_marker(info: Mapping[str, Any]) -> object:
    """Something that changes when the firmware restarts: GET_INFO's ``boot_count``.

    ``boot_id`` and ``boots`` are read too, for firmware that names it so.
    """
    for key in ("boot_count", "boot_id", "boots"):
        if key in info:
            return info[key]
    return None


class FirmwareEnforcer:
    """Keeps the firmware's feature switches equal to the entitled features."""

    name = "firmware"

    def __init__(
        self, firmware: FirmwareFeatures, *, retry_s: float = 2.0, probe_s: float = 10.0
    ) -> None:
        self.firmware = firmware
        self.retry_s = retry_s
        self.probe_s = probe_s
        self.desired: dict[str, dict[str, Any]] | None = None
        self.pushed: dict[str, dict[str, Any]] | None = None
        self.dirty = False
        self.link_up: bool | None = None
        self.pushes = 0
        self.failures: dict[str, int] = {}
        self._boot: object = None
        self._wake = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        return {
            "link_up": self.link_up,
            "in_sync": not self.dirty,
            "pushes": self.pushes,
            "failures": dict(self.failures),
        }

    async def apply(
        self, decisions: Mapping[str, tuple[bool, str]], *, state: TrustState, now: int
    ) -> None:
        """Record the new desired features; the background loop pushes them at once."""
        desired = entitled_features(decisions, state)
        if desired != self.desired or self.dirty:
            self.desired = desired
            self.mark_dirty()

    def mark_dirty(self) -> None:
        """Push again soon (after a reboot command, for instance)."""
        self.dirty = True
        self._wake.set()

    def _failed(self, what: str, exc: EntitleError) -> None:
        self.failures[exc.reason] = self.failures.get(exc.reason, 0) + 1
        if self.link_up is not False:
            log.warning("firmware %s failed (%s): %s; will retry", what, exc.reason, exc)
        self.link_up = False

    async def sync(self) -> bool:
        """Push the desired features if they are not known to be in the firmware."""
        desired = self.desired
        if desired is None or not self.dirty:
            return True
        try:
            await self.firmware.set_features(desired)
        except EntitleError as exc:
            self._failed("SET_FEATURES", exc)
            return False
        self.pushed, self.pushes, self.link_up = desired, self.pushes + 1, True
        self.dirty = self.desired != desired  # a change may have arrived meanwhile
        log.info("firmware features set: %s", sorted(desired))
        return True

    async def probe(self) -> None:
        """Ask the firmware who it is; a failure or a restart makes the features dirty."""
        try:
            info = await self.firmware.get_info()
        except EntitleError as exc:
            self._failed("probe", exc)
            self.dirty = True
            return
        boot = _boot_marker(info)
        came_back = self.link_up is False
        rebooted = boot is not None and self._boot is not None and boot != self._boot
        self._boot, self.link_up = boot, True
        if came_back or rebooted:
            log.info("firmware %s: pushing features again", "rebooted" if rebooted else "is back")
            self.dirty = True

    async def run(self, now: Clock | None = None) -> None:
        """Push when dirty, otherwise probe the link every ``probe_s``; until cancelled."""
        # learn the boot marker before the first push, so a reboot right after it shows
        await self.probe()
        while True:
            if self.dirty and self.desired is not None:
                await self.sync()
            else:
                await self.probe()
                if self.dirty and self.desired is not None:
                    continue
            self._wake.clear()
            wait = self.retry_s if self.dirty else self.probe_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
