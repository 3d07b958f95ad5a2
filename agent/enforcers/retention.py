"""Delete camera recordings older than the entitled video retention.

The entitlement ``video_retention`` carries ``days``; without it (not
entitled, lapsed, or no usable ``days``) recordings are kept for
``default_days`` (1). A recording's age is its modification time against the
agent's trusted time, which is passed in (never read here), so a clock set
back cannot make the device keep footage it is not paid for, and tests step
the clock instead of waiting. Only regular files under the folder are
deleted; symbolic links are never followed or removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.enforcers.entitled import entitled_features
from agent.verifier import TrustState
from common.clock import Clock

__all__ = ["DAY_S", "RetentionPruner", "retention_days"]

log = logging.getLogger(__name__)
DAY_S = 86_400
_MAX_DAYS = 3650


def retention_days(
    features: Mapping[str, Mapping[str, Any]], *, feature: str, default_days: int
) -> int:
    """The entitled retention in days, or ``default_days`` when not entitled or unusable."""
    days = features.get(feature, {}).get("days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= _MAX_DAYS:
        return default_days
    return days


class RetentionPruner:
    """Keeps ``folder`` to the entitled number of days of recordings."""

    name = "retention"

    def __init__(
        self,
        folder: Path,
        *,
        feature: str = "video_retention",
        default_days: int = 1,
        interval_s: float = 600.0,
    ) -> None:
        self.folder = folder
        self.feature = feature
        self.default_days = default_days
        self.days = default_days
        self.interval_s = interval_s
        self.deleted = 0
        self.failures = 0

    def stats(self) -> dict[str, Any]:
        return {"days": self.days, "deleted": self.deleted, "failures": self.failures}

    async def apply(
        self, decisions: Mapping[str, tuple[bool, str]], *, state: TrustState, now: int
    ) -> None:
        """Take the entitled days from the decisions and prune at once."""
        features = entitled_features(decisions, state)
        days = retention_days(features, feature=self.feature, default_days=self.default_days)
        if days != self.days:
            log.info("video retention now %d days (was %d)", days, self.days)
        self.days = days
        await asyncio.to_thread(self.prune, now=now)

    def prune(self, *, now: int) -> list[Path]:
        """Delete recordings modified before ``now - days``; the paths deleted."""
        cutoff = now - self.days * DAY_S
        deleted: list[Path] = []
        if not self.folder.is_dir():
            return deleted
        for root, _dirs, files in os.walk(self.folder, followlinks=False):
            for name in files:
                path = Path(root, name)
                try:
                    info = path.lstat()
                    if not path.is_symlink() and path.is_file() and info.st_mtime < cutoff:
                        path.unlink()
                        deleted.append(path)
                except FileNotFoundError:
                    continue  # the recorder removed it first
                except OSError as exc:
                    self.failures += 1
                    log.warning("could not prune %s: %s", path, exc)
        self.deleted += len(deleted)
        if deleted:
            log.info("pruned %d recordings older than %d days", len(deleted), self.days)
        return deleted

    async def run(self, now: Clock) -> None:
        """Prune every ``interval_s`` by trusted time ``now()``; until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.prune, now=now())
