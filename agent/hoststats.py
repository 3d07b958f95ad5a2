"""Host figures for health reports: uptime, memory, disk, CPU temperature, packet loss.

On Linux they are read straight from ``/proc``, ``/sys`` and ``statvfs``:
importing psutil costs ~2.6 MB of resident memory, which a small device's
agent does not need to pay for five numbers. Elsewhere psutil (imported
lazily) gives the same figures. Anything the host cannot say is None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["HostSampler"]

_PROC = Path("/proc")
_THERMAL = Path("/sys/class/thermal")
_NUMBER = (int, float)


def _pct(used: float, total: float) -> float | None:
    return round(min(100.0, max(0.0, 100.0 * used / total)), 1) if total > 0 else None


def _linux_uptime(now: float) -> int:
    return int(float((_PROC / "uptime").read_text().split()[0]))


def _linux_mem() -> float | None:
    fields: dict[str, int] = {}
    for line in (_PROC / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            fields[name] = int(rest.split()[0])
    total, available = fields.get("MemTotal", 0), fields.get("MemAvailable")
    return None if available is None else _pct(total - available, total)


def _linux_temp() -> float | None:
    for zone in sorted(_THERMAL.glob("thermal_zone*")):
        try:
            value = int((zone / "temp").read_text().strip()) / 1000
        except (OSError, ValueError):
            continue
        if -100 <= value <= 200:
            return round(value, 1)
    return None


def _linux_net() -> tuple[int, int] | None:
    """(errors + drops, packets) over every interface but loopback."""
    lost = packets = 0
    for line in (_PROC / "net" / "dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            continue
        f = [int(x) for x in rest.split()]
        packets += f[1] + f[9]
        lost += f[2] + f[3] + f[10] + f[11]
    return lost, packets


def _disk(path: Path) -> float | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return _pct(used, used + st.f_bavail * st.f_frsize)  # as df and psutil count it


class HostSampler:
    """Samples the host; packet loss is the ratio between two samples (None at first)."""

    def __init__(self, *, disk_path: Path) -> None:
        self.disk_path = disk_path
        self._last_net: tuple[int, int] | None = None
        self._linux = (_PROC / "meminfo").exists()

    def _loss_pct(self, read: Callable[[], tuple[int, int] | None]) -> float | None:
        try:
            sample = read()
        except (OSError, ValueError, IndexError):
            return None
        last, self._last_net = self._last_net, sample
        if sample is None or last is None or sample[1] <= last[1]:
            return None
        lost = max(0, sample[0] - last[0])
        return round(min(100.0, 100.0 * lost / (sample[1] - last[1] + lost)), 3)

    def sample(self, *, now: float) -> dict[str, Any]:
        """``uptime_s``, ``cpu_temp_c``, ``mem_used_pct``, ``disk`` and ``net`` of a report."""
        if self._linux:
            try:
                uptime, mem, temp = _linux_uptime(now), _linux_mem(), _linux_temp()
            except (OSError, ValueError, IndexError):
                uptime, mem, temp = 0, None, None
            loss = self._loss_pct(_linux_net)
        else:
            uptime, mem, temp, loss = self._psutil(now)
        return {
            "uptime_s": max(0, uptime),
            "cpu_temp_c": temp,
            "mem_used_pct": mem,
            "disk": {"used_pct": _disk(self.disk_path), "write_errors": None, "reallocated": None},
            "net": {"rssi_dbm": None, "loss_pct": loss},
        }

    def _psutil(self, now: float) -> tuple[int, float | None, float | None, float | None]:
        import psutil  # lazily, and only where /proc is not there to read

        def net() -> tuple[int, int] | None:
            io = psutil.net_io_counters()
            if io is None:
                return None
            return (
                int(io.dropin + io.dropout + io.errin + io.errout),
                int(io.packets_sent + io.packets_recv),
            )

        temp: float | None = None
        sensors: dict[str, Any]
        try:
            sensors = getattr(psutil, "sensors_temperatures", dict)()
        except (OSError, RuntimeError):
            sensors = {}
        for entries in sensors.values():
            for entry in entries:
                if isinstance(entry.current, _NUMBER) and -100 <= entry.current <= 200:
                    temp = round(float(entry.current), 1)
                    break
            if temp is not None:
                break
        mem = round(float(psutil.virtual_memory().percent), 1)
        return int(now - psutil.boot_time()), mem, temp, self._loss_pct(net)
