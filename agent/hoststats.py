"""Host figures for health reports: uptime, memory, disk, CPU temperature, packet loss.

Read through psutil on every platform it supports (one code path, so the
figures a Linux gateway sends are the ones the tests see). psutil is
imported when the first sampler is made, so an agent without health
reporting never loads it. Anything the host cannot say is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from protocol.health import Disk, Net

__all__ = ["HostFigures", "HostSampler", "net_counters"]

_LOOPBACK = ("lo", "lo0", "Loopback Pseudo-Interface 1")
_PSUTIL_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError)


def _pct(value: float) -> float:
    return round(min(100.0, max(0.0, float(value))), 1)


def net_counters() -> tuple[int, int] | None:
    """(errors + drops, packets) over every interface but loopback; None if unknown."""
    import psutil

    per_nic = psutil.net_io_counters(pernic=True)
    if not per_nic:
        return None
    lost = packets = 0
    for name, io in per_nic.items():
        if name in _LOOPBACK:
            continue
        packets += io.packets_sent + io.packets_recv
        lost += io.errin + io.errout + io.dropin + io.dropout
    return int(lost), int(packets)


def _temperature(psutil: Any) -> float | None:
    """The first plausible sensor reading (not every platform has sensors)."""
    sensors: dict[str, Any]
    try:
        sensors = getattr(psutil, "sensors_temperatures", dict)()
    except _PSUTIL_ERRORS:
        return None
    for entries in sensors.values():
        for entry in entries:
            current = entry.current
            if isinstance(current, int | float) and -100 <= current <= 200:
                return round(float(current), 1)
    return None


@dataclass(frozen=True, slots=True)
class HostFigures:
    """What the host says for a health report; None where it cannot say."""

    uptime_s: int
    cpu_temp_c: float | None
    mem_used_pct: float | None
    disk: Disk
    net: Net


class HostSampler:
    """Samples the host; packet loss is the ratio between two samples (None at first).

    ``net`` reads the cumulative (lost, packets) counters; tests pass their own.
    """

    def __init__(
        self,
        *,
        disk_path: Path,
        net: Callable[[], tuple[int, int] | None] = net_counters,
        reuse_s: float = 0.0,
    ) -> None:
        """``reuse_s``: answer with the last sample while it is younger than this (one
        sampler shared by the simulated devices of one host reads the host once a second).
        """
        import psutil

        self._psutil = psutil
        self.disk_path = disk_path
        self._net = net
        self._last_net: tuple[int, int] | None = None
        self._reuse_s = reuse_s
        self._last: tuple[float, HostFigures] | None = None
        try:
            self._boot_time: float | None = psutil.boot_time()  # fixed for this boot
        except _PSUTIL_ERRORS:
            self._boot_time = None

    def _loss_pct(self) -> float | None:
        try:
            sample = self._net()
        except _PSUTIL_ERRORS:
            return None
        last, self._last_net = self._last_net, sample
        if sample is None or last is None or sample[1] <= last[1]:
            return None
        lost = max(0, sample[0] - last[0])
        return round(min(100.0, 100.0 * lost / (sample[1] - last[1] + lost)), 3)

    def _disk_pct(self) -> float | None:
        try:
            # used / (used + available to us), as df counts it
            return _pct(self._psutil.disk_usage(str(self.disk_path)).percent)
        except _PSUTIL_ERRORS:
            return None

    def sample(self, *, now: float) -> HostFigures:
        """Uptime, CPU temperature, memory, disk and packet loss, as of ``now``."""
        if self._last is not None and 0 <= now - self._last[0] < self._reuse_s:
            taken, sample = self._last
            return replace(sample, uptime_s=sample.uptime_s + int(now - taken))
        psutil = self._psutil
        uptime = 0 if self._boot_time is None else int(now - self._boot_time)
        try:
            mem: float | None = _pct(psutil.virtual_memory().percent)
        except _PSUTIL_ERRORS:
            mem = None
        sample = HostFigures(
            uptime_s=max(0, uptime),
            cpu_temp_c=_temperature(psutil),
            mem_used_pct=mem,
            disk=Disk(used_pct=self._disk_pct()),
            net=Net(loss_pct=self._loss_pct()),
        )
        self._last = (now, sample)
        return sample
