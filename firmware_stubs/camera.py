"""IP camera firmware: records fake files and keeps only what retention allows.

One file per ``interval_s`` (aligned to the epoch) in the recordings folder,
named ``rec-YYYYmmddTHHMMSSZ.mp4`` after the start of its interval. After
every tick the files older than the retention window are deleted: the
``video_retention`` feature's ``days`` when entitled, one day otherwise.
Files whose names do not follow the pattern are never touched.

The feature switches live in RAM, so after a boot the camera does not know
what retention is paid for: it deletes nothing until the host has sent
SET_FEATURES (or :attr:`CameraEmulator.FEATURES_GRACE_S` of uptime passed
without a host), so a reboot never costs footage the entitlement keeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware_stubs.emulator import Emulator, Refused
from protocol.serial import ErrorCode

__all__ = ["DEFAULT_RETENTION_DAYS", "MAX_RETENTION_DAYS", "CameraEmulator", "recording_name"]

DEFAULT_RETENTION_DAYS = 1
MAX_RETENTION_DAYS = 3650
_DAY_S = 86_400
_NAME = re.compile(r"rec-(\d{8}T\d{6}Z)\.mp4")
_STAMP = "%Y%m%dT%H%M%SZ"
_MAX_WRITES_PER_TICK = 10_000  # a clock jump of years must not fill the disk in one go


def recording_name(start: int) -> str:
    """The file name of the recording that starts at ``start`` (epoch seconds)."""
    return f"rec-{datetime.fromtimestamp(start, UTC).strftime(_STAMP)}.mp4"


def _recording_start(name: str) -> int | None:
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return int(datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC).timestamp())


class CameraEmulator(Emulator):
    """A camera whose recordings folder shows the entitled retention at work."""

    kind = "camera"
    model = "CAM-4K"
    FRAME_DROP_PERIOD_S = 600.0  # one dropped frame per 10 minutes when healthy
    HOT_FRAME_DROP_PERIOD_S = 10.0  # thermal throttling drops far more
    DISK_ERROR_EVERY = 3  # with the disk fault, every third recording write fails
    DISK_ERRORS_OVER_TIME = False
    FEATURES_GRACE_S = 600.0  # after a boot, wait this long for the host's features

    def __init__(self, *, recordings: Path, interval_s: int = 3600, **kwargs: Any) -> None:
        if interval_s < 1:
            raise ValueError("interval_s must be at least one second")
        self.recordings = Path(recordings)
        self.recordings.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self.frame_drops = 0
        self._drop_budget = 0.0
        self._writes = 0
        self._next_start: int | None = None
        self._features_known = False  # SET_FEATURES since the last boot
        super().__init__(**kwargs)
        self.tick()

    @property
    def retention_days(self) -> int:
        params = self.features.get("video_retention")
        if params is None:
            return DEFAULT_RETENTION_DAYS
        return int(params["days"])

    def set_features(self, features: dict[str, dict[str, Any]]) -> None:
        retention = features.get("video_retention")
        if retention is not None:
            days = retention.get("days")
            if type(days) is not int or not 1 <= days <= MAX_RETENTION_DAYS:
                raise Refused(
                    ErrorCode.BAD_REQUEST,
                    f"video_retention.days must be an int from 1 to {MAX_RETENTION_DAYS}",
                )
        super().set_features(features)
        self._features_known = True
        self.prune()

    def features_lost(self) -> None:
        super().features_lost()
        self._features_known = False

    def advance(self, before: float, now: float) -> None:
        hot = self.faults.overheating
        period = self.HOT_FRAME_DROP_PERIOD_S if hot else self.FRAME_DROP_PERIOD_S
        self._drop_budget += max(now - before, 0.0) / period
        drops = int(self._drop_budget)
        self._drop_budget -= drops
        self.frame_drops += drops
        self.record(int(now))
        self.prune()

    def record(self, now: int) -> None:
        """Write one file for every interval that started since the last one, up to ``now``."""
        current = now - now % self.interval_s
        first = current if self._next_start is None else self._next_start
        # what would be pruned at once is never written
        oldest_kept = self._cutoff(now)
        if first < oldest_kept:
            first = oldest_kept + (-oldest_kept) % self.interval_s
        starts = range(first, current + 1, self.interval_s)
        for start in starts[-_MAX_WRITES_PER_TICK:]:
            self._writes += 1
            if self.faults.disk_write_errors and self._writes % self.DISK_ERROR_EVERY == 0:
                self.disk_write_failed(recording_name(start))
                continue
            path = self.recordings / recording_name(start)
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + start.to_bytes(8, "big"))
        self._next_start = max(current + self.interval_s, first)

    def prune(self) -> list[str]:
        """Delete the recordings that started before the retention window; return their names.

        Nothing is deleted after a boot until the retention is known (see the module).
        """
        if not self._features_known and self.uptime_s() < self.FEATURES_GRACE_S:
            return []
        cutoff = self._cutoff(int(self.now()))
        removed = []
        for path in self.recordings.iterdir():
            start = _recording_start(path.name)
            if start is not None and start < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        if removed:
            self.log("info", f"retention {self.retention_days} d: deleted {len(removed)} file(s)")
        return sorted(removed)

    def recording_files(self) -> list[str]:
        return sorted(p.name for p in self.recordings.iterdir() if _NAME.fullmatch(p.name))

    def _cutoff(self, now: int) -> int:
        return now - self.retention_days * _DAY_S

    def kind_health(self) -> dict[str, Any]:
        files = self.recording_files()
        oldest = _recording_start(files[0]) if files else None
        return {
            "frame_drops": self.frame_drops,
            "recordings": len(files),
            "oldest_recording_ts": oldest,
            "retention_days": self.retention_days,
            "lens_contrast_pct": 4.0 if self.faults.lens_obstruction else 87.0,
        }

    def faults_found(self) -> list[dict[str, str]]:
        found = super().faults_found()
        if self.faults.lens_obstruction:
            found.append(
                {
                    "component": "lens",
                    "code": "lens_obstructed",
                    "detail": "image contrast at 4% of its baseline: the lens is dirty or "
                    "covered; not a hardware fault, clean the lens",
                }
            )
        return found
