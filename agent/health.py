"""Health collection and publishing: sample the device, queue the report, deliver it.

:class:`HealthCollector` samples on an interval: host figures
(:mod:`agent.hoststats`), the firmware's GET_HEALTH when a firmware client
is configured, the serial link's counters and the agent's error counters
(serial, cmd, rejected tokens). The figures are validated against
:mod:`protocol.health` into one :class:`~protocol.health.HealthReport` and
appended to the :class:`~agent.outbox.Outbox`, which gives it its ``seq``.

A report is validated once, when it is built (the firmware's figures are
untrusted); the outbox keeps it as the JSON that goes on the wire, and the
publisher sends those bytes as stored (the cloud validates every report it
receives). Re-parsing each report before sending cost a simulated fleet a
tenth of its CPU and checked nothing the build had not.

:class:`HealthPublisher` drains the outbox in ``seq`` order over the MQTT
session with QoS 1 and marks a report sent only after the broker's PUBACK (the
outbox keeps sent reports a while, for the cloud's ``resend_health``); each
publish is bounded in time. While the broker is away reports stay queued
(the outbox is bounded and counts what it drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from agent.hoststats import HostSampler
from agent.outbox import Outbox
from protocol.errors import EntitleError
from protocol.health import (
    ERROR_CATEGORIES,
    KINDS,
    MAX_HEALTH_BYTES,
    MAX_REASONS,
    BadHealthReport,
    HealthReport,
    Reboots,
    SerialCounters,
    health_from_dict,
    health_to_dict,
)
from protocol.topics import device_topic

__all__ = ["FirmwareHealth", "HealthCollector", "HealthPublisher", "Publisher"]

log = logging.getLogger(__name__)
_MAX_REASONS = MAX_REASONS - 4  # of the schema's limit, leaving room for the collector's own


class FirmwareHealth(Protocol):
    """The part of :class:`agent.firmware.FirmwareClient` health collection uses."""

    @property
    def counters(self) -> Mapping[str, int]: ...

    async def get_info(self) -> dict[str, Any]: ...

    async def get_health(self) -> dict[str, Any]: ...


class Publisher(Protocol):
    """Publishes one message and returns after the broker acknowledged it (QoS 1)."""

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float) -> None: ...

    @property
    def connected(self) -> asyncio.Event: ...


def _validated(fields: dict[str, Any]) -> HealthReport:
    """The schema's checks on a report being built (seq 1 stands in: the outbox numbers it)."""
    return replace(health_from_dict({**fields, "seq": 1}), seq=0)


def _merge_firmware(report: dict[str, Any], health: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay what the firmware (untrusted: validated after) knows better than the host;
    the rest of its fields go in kind_specific. Changes and returns ``report``."""
    fw = report["fw"]
    known = {"uptime_s", "cpu_temp_c", "mem_used_pct", "reboots", "disk", "net", "fw", "kind"}
    for key in ("uptime_s", "cpu_temp_c", "mem_used_pct", "fw"):
        if health.get(key) is not None:
            report[key] = health[key]
    for key in ("reboots", "disk", "net"):
        part = health.get(key)
        if isinstance(part, Mapping):
            report[key] = {**report[key], **{k: v for k, v in part.items() if k in report[key]}}
    extra = health.get("kind_specific")
    specific = dict(extra) if isinstance(extra, Mapping) else {}
    specific.update({k: v for k, v in health.items() if k not in known and k != "kind_specific"})
    report["kind_specific"] = specific
    report["fw"] = report["fw"] or fw
    return report


class HealthCollector:
    """Builds one report per :meth:`collect_once`; :meth:`run` does it every interval."""

    def __init__(
        self,
        *,
        device_id: str,
        outbox: Outbox,
        clock: Callable[[], float],
        kind: str | None = None,
        firmware: FirmwareHealth | None = None,
        error_counts: Callable[[], Mapping[str, Mapping[str, int]]] = dict,
        interval_s: float = 60.0,
        disk_path: Path = Path("/"),
        on_report: Callable[[int], None] | None = None,
        host: HostSampler | None = None,
    ) -> None:
        """``host``: the host's sampler (default: one of this device's, over ``disk_path``)."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self._learn_kind = kind is None  # then the firmware's GET_INFO says
        self.device_id = device_id
        self.outbox = outbox
        self.clock = clock
        self.kind = kind or "gateway"
        self.firmware = firmware
        self.error_counts = error_counts
        self.interval_s = interval_s
        self.disk_path = disk_path
        self.on_report = on_report
        self.collected = 0
        self.firmware_failures: dict[str, int] = {}
        self._fw_version: str | None = None
        self._host = host or HostSampler(disk_path=disk_path)

    def _firmware_failed(self, exc: EntitleError) -> None:
        self.firmware_failures[exc.reason] = self.firmware_failures.get(exc.reason, 0) + 1
        log.info("firmware health not read: %s (%s)", exc.reason, exc)

    async def _firmware_health(self) -> dict[str, Any] | None:
        if self.firmware is None:
            return None
        try:
            if self._fw_version is None:
                info = await self.firmware.get_info()
                fw = info.get("fw") or info.get("version")
                self._fw_version = str(fw)[:64] if fw else None
                if self._learn_kind and info.get("kind") in KINDS:
                    self.kind = str(info["kind"])
            return await self.firmware.get_health()
        except EntitleError as exc:
            self._firmware_failed(exc)
            return None

    def _errors(self) -> dict[str, dict[str, int]]:
        given = self.error_counts()
        # the schema allows 64 reasons per category; keep the most frequent
        errors = {
            c: dict(sorted(given.get(c, {}).items(), key=lambda kv: -kv[1])[:_MAX_REASONS])
            for c in ERROR_CATEGORIES
        }
        for reason, n in self.firmware_failures.items():
            errors["serial"][reason] = errors["serial"].get(reason, 0) + n
        return errors

    def _serial(self) -> SerialCounters:
        counters = self.firmware.counters if self.firmware is not None else {}
        return SerialCounters(
            crc_errors=int(counters.get("crc_errors", 0)),
            timeouts=int(counters.get("timeouts", 0)),
        )

    async def build(self, *, with_firmware: bool = True) -> HealthReport:
        """One validated report, not numbered yet (``seq`` 0: the outbox numbers it).

        Raises:
            BadHealthReport: only if the host's own figures fail the schema (a bug).
        """
        now = self.clock()
        host = self._host.sample(now=now)
        health = await self._firmware_health() if with_firmware else None
        report = HealthReport(
            device_id=self.device_id,
            seq=0,
            ts=int(now),
            kind=self.kind,
            uptime_s=host.uptime_s,
            fw=self._fw_version,
            # only the firmware knows its reboots: unknown (None) unless it answered, since
            # a stand-in 0 between two real counts reads as a reset to the cloud
            reboots=Reboots(),
            cpu_temp_c=host.cpu_temp_c,
            mem_used_pct=host.mem_used_pct,
            disk=host.disk,
            net=host.net,
            serial=self._serial(),
            errors=self._errors(),
        )
        if health is None:
            return _validated(health_to_dict(report))
        try:
            return _validated(_merge_firmware(health_to_dict(report), health))
        except BadHealthReport as exc:
            # the firmware's figures are untrusted too: keep the host's, count the refusal
            log.warning("firmware health refused (%s): %s", exc.reason, exc)
            self.firmware_failures["bad_health"] = self.firmware_failures.get("bad_health", 0) + 1
            return await self.build(with_firmware=False)

    async def collect_once(self) -> int:
        """Sample, validate and queue one report; its seq."""
        report = await self.build()
        seq = self.outbox.append(report)
        self.collected += 1
        if self.on_report is not None:
            self.on_report(seq)
        return seq

    async def run(self) -> None:
        """Collect every ``interval_s`` on a fixed cadence: a slow collection (a firmware
        timeout, a busy machine) does not stretch the period; a missed tick is skipped,
        not made up in a burst."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                await self.collect_once()
            except Exception:  # a sampling bug must not stop health reporting for good
                log.exception("health collection failed")
            due += self.interval_s
            now = loop.time()
            if due < now:  # behind by more than one interval
                due = now
            await asyncio.sleep(due - now)


class HealthPublisher:
    """Drains the outbox to ``entitle/v1/dev/{id}/health``, marking only acked reports sent."""

    def __init__(
        self,
        *,
        device_id: str,
        outbox: Outbox,
        publisher: Publisher,
        publish_timeout_s: float = 10.0,
        batch: int = 100,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.publisher = publisher
        self.topic = device_topic(device_id, "health")
        self.publish_timeout_s = publish_timeout_s
        self.batch = batch
        self.retry_s = retry_s
        self.published = 0
        self.failures = 0
        self.unpublishable = 0
        self.wake = asyncio.Event()

    def notify(self, seq: int = 0) -> None:
        """Something was queued: drain soon."""
        self.wake.set()

    async def drain_once(self) -> int:
        """Publish queued reports until empty or a publish fails; how many were acked."""
        acked_total = 0
        while True:
            queued = self.outbox.pending(self.batch)
            if not queued:
                return acked_total
            acked: list[int] = []
            try:
                for item in queued:
                    if len(item.body) > MAX_HEALTH_BYTES:  # the cloud would refuse it: never loop
                        log.error("dropping report %s: %d bytes", item.seq, len(item.body))
                        self.unpublishable += 1
                    else:
                        await self.publisher.publish(
                            self.topic, item.body, timeout_s=self.publish_timeout_s
                        )
                    acked.append(item.seq)
            finally:
                if acked:
                    self.outbox.mark_sent(acked, now=int(self.clock()))
                    self.published += len(acked)
                    acked_total += len(acked)

    async def run(self) -> None:
        while True:
            await self.publisher.connected.wait()
            self.wake.clear()
            try:
                await self.drain_once()
            except (EntitleError, TimeoutError) as exc:
                self.failures += 1
                log.info("health publish interrupted (%s); %d queued", exc, len(self.outbox))
                await asyncio.sleep(self.retry_s)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_s * 5):
                    await self.wake.wait()
