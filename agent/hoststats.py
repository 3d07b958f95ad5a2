"""Host figures for health reports: uptime, memory, disk, CPU temperature, packet loss.

On Linux they are read from /proc, /sys and statvfs the way psutil reads them
(:class:`ProcFS`: the same files, the same formulas, the same API subset), since
importing psutil costs an idle agent ~0.7 MB (``bench/bench_agent_rss.py``);
``tests/agent/test_health.py`` checks each figure against psutil's on the
machine the tests run on. Elsewhere, or on a Linux without those files, psutil
reads them, imported when the first sampler is made. Anything the host cannot
say is None.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from protocol.health import Disk, Net

__all__ = ["HostFigures", "HostSampler", "ProcFS", "host", "net_counters"]

_LOOPBACK = ("lo", "lo0", "Loopback Pseudo-Interface 1")
_PSUTIL_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError)


def _pct(value: float) -> float:
    return round(min(100.0, max(0.0, float(value))), 1)


class _Percent(NamedTuple):
    percent: float


class _NicCounters(NamedTuple):
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


class _Temperature(NamedTuple):
    label: str
    current: float


def _usage_pct(used: float, total: float) -> float:
    return 0.0 if not total else round(used / total * 100, 1)  # psutil's usage_percent


class ProcFS:
    """The part of psutil's API the sampler uses, read from Linux's /proc and /sys as
    psutil's Linux implementation reads them (psutil 5.9-7)."""

    @staticmethod
    def available() -> bool:
        """Linux with the files read here (MemAvailable: kernels since 3.14)."""
        if not sys.platform.startswith("linux"):
            return False
        try:
            return b"MemAvailable:" in Path("/proc/meminfo").read_bytes()
        except OSError:
            return False

    @staticmethod
    def boot_time() -> float:
        for line in Path("/proc/stat").read_bytes().splitlines():
            if line.startswith(b"btime"):
                return float(line.split()[1])
        raise RuntimeError("line 'btime' not found in /proc/stat")

    @staticmethod
    def virtual_memory() -> _Percent:
        mems = {}
        for line in Path("/proc/meminfo").read_bytes().splitlines():
            fields = line.split()
            if len(fields) >= 2:
                mems[fields[0]] = int(fields[1]) * 1024
        total, avail = mems[b"MemTotal:"], mems[b"MemAvailable:"]
        if avail < 0:
            avail = 0
        elif avail > total:
            avail = mems[b"MemFree:"]
        return _Percent(_usage_pct(total - avail, total))

    @staticmethod
    def disk_usage(path: str) -> _Percent:
        st = os.statvfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        return _Percent(_usage_pct(used, used + st.f_bavail * st.f_frsize))

    @staticmethod
    def net_io_counters(*, pernic: bool) -> dict[str, _NicCounters]:
        assert pernic
        nics = {}
        for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
            colon = line.rfind(":")
            fields = [int(f) for f in line[colon + 1 :].split()]
            nics[line[:colon].strip()] = _NicCounters(
                packets_sent=fields[9],
                packets_recv=fields[1],
                errin=fields[2],
                errout=fields[10],
                dropin=fields[3],
                dropout=fields[11],
            )
        return nics

    @staticmethod
    def sensors_temperatures() -> dict[str, list[_Temperature]]:
        """Each sensor's reading by unit name, in psutil's order (hwmon, else thermal)."""
        hwmon = Path("/sys/class/hwmon")
        found = [*hwmon.glob("hwmon*/temp*_*"), *hwmon.glob("hwmon*/device/temp*_*")]
        bases = sorted({str(p).split("_")[0] for p in found})
        for path in Path("/sys/devices/platform").glob("coretemp.*/hwmon/hwmon*/temp*_*"):
            name = str(path)
            alt = "/sys/class/hwmon/" + name.split("/hwmon/", 1)[1]
            if alt not in bases:
                bases.append(name)
        units: defaultdict[str, list[_Temperature]] = defaultdict(list)
        for base in bases:
            try:
                current = float(Path(base + "_input").read_bytes()) / 1000.0
                unit = Path(os.path.dirname(base), "name").read_text().strip()
            except (OSError, ValueError):
                continue
            units[unit].append(_Temperature(_read(base + "_label"), current))
        if bases:
            return dict(units)
        for zone in sorted({str(p) for p in Path("/sys/class/thermal").glob("thermal_zone*")}):
            try:
                current = float(Path(zone, "temp").read_bytes()) / 1000.0
                unit = Path(zone, "type").read_text().strip()
            except (OSError, ValueError):
                continue
            units[unit].append(_Temperature("", current))
        return dict(units)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except (OSError, ValueError):
        return ""


def host() -> Any:
    """What reads the host's figures: :class:`ProcFS` on Linux, else psutil."""
    if ProcFS.available():
        return ProcFS
    import psutil

    return psutil


def net_counters() -> tuple[int, int] | None:
    """(errors + drops, packets) over every interface but loopback; None if unknown."""
    per_nic = host().net_io_counters(pernic=True)
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
        psutil = self._psutil = host()
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
