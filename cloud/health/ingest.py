"""The health stream consumer: batches device messages into the database, then acks them.

The MQTT bridge delivers every message of the subscriptions below to
:meth:`HealthIngest.offer` with an ``ack`` callback, on a persistent session
with manual acknowledgement. :meth:`HealthIngest.run` commits a batch
(``batch_size`` messages, or whatever arrived within ``flush_delay_s``) in
one transaction and only then acks its messages. A worker killed mid-batch
never acked them, so the broker delivers them again (to the same session
when it reconnects); ``INSERT ... ON CONFLICT DO NOTHING`` on
``(device_id, seq)`` makes the second delivery a no-op: each report is
stored exactly once.

Refused messages (malformed JSON, wrong version, oversized, a ``device_id``
that is not the topic's, an unknown device, a result for an unknown command)
are counted by reason in ``health_rejects``, never stored, and acked: the
consumer keeps going. If the database is down the batch is kept and retried;
a message the database itself refuses is isolated (:meth:`HealthIngest.commit`).
Redelivered refusals are counted again: the counters are "refusals seen".

Status is a plain subscription, not ``$share/``: shared subscriptions get no
retained messages, and every worker must learn the devices' last status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.issuing import Issued
from cloud.health import bulk
from cloud.health import queries as repo
from cloud.health.rows import ReportRow, parse_row
from common.clock import Clock
from common.mqtt import Received
from protocol.commands import BadCommand, parse_command_result
from protocol.errors import TopicError
from protocol.health import BadHealthReport
from protocol.status import BadStatus
from protocol.status import read as read_status
from protocol.topics import PREFIX, parse_device_topic

__all__ = [
    "NATS_SUBSCRIPTIONS",
    "SUBSCRIPTIONS",
    "BatchReport",
    "HealthIngest",
    "Incoming",
    "StageCpu",
]

_log = logging.getLogger(__name__)

SUBSCRIPTIONS: tuple[str, ...] = (
    f"$share/cloud/{PREFIX}/dev/+/health",
    f"$share/cloud/{PREFIX}/dev/+/cmd/res",
    f"{PREFIX}/dev/+/status",
)
# On NATS the reports come from JetStream (cloud.health.jetstream), not over MQTT
NATS_SUBSCRIPTIONS: tuple[str, ...] = tuple(t for t in SUBSCRIPTIONS if not t.endswith("/health"))


Incoming = Received
"""One delivered message and how to acknowledge it (once it is committed): the MQTT
client's own :class:`common.mqtt.Received`, handed over by the bridge as it is."""


@dataclass(slots=True)
class BatchReport:
    """What one committed batch did."""

    stored: int = 0
    duplicates: int = 0
    statuses: int = 0
    answers: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # devices that said they are online holding an older token than their current one
    # (and, with ``resend_on_connect``, those that just connected holding the current one)
    behind: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StageCpu:
    """CPU seconds this worker spent per stage of the ingest (``time.thread_time``).

    ``receive`` is the MQTT network thread's (:class:`common.mqtt.BatchReceiver`),
    filled in by whoever runs it; ``parse`` and ``store`` are :meth:`HealthIngest.process`'s
    (``store`` is the whole transaction: devices, inserts, state, commit).
    """

    receive: float = 0.0
    parse: float = 0.0
    store: float = 0.0


@dataclass(slots=True)
class _Parsed:
    reports: list[ReportRow] = field(default_factory=list)
    statuses: list[tuple[str, bool, int | None]] = field(default_factory=list)  # id, online, ver
    # devices whose status was the first of a new connection, as published (not a retained
    # copy replayed to the cloud's own subscription)
    connecting: set[str] = field(default_factory=set)
    results: list[Any] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)


def _parse(batch: list[Incoming]) -> _Parsed:
    out = _Parsed()
    for message in batch:
        try:
            device_id, channel = parse_device_topic(message.topic)
        except TopicError:
            out.rejected["bad_topic"] += 1
            continue
        try:
            if channel == "health":
                out.reports.append(parse_row(message.payload, topic_device_id=device_id))
            elif channel == "cmd/res":
                out.results.append(parse_command_result(message.payload, topic_device_id=device_id))
            elif channel == "status":
                if message.payload:  # empty: a cleared retained message, not a status
                    status = read_status(message.payload)
                    held = status.details.get("token_ver")
                    version = held if type(held) is int else None
                    out.statuses.append((device_id, status.online, version))
                    if status.details.get("on_connect") is True and not message.retained:
                        out.connecting.add(device_id)
            else:
                out.rejected["bad_topic"] += 1
        except (BadHealthReport, BadCommand) as exc:
            prefix = "cmd_res_" if channel == "cmd/res" else ""
            out.rejected[prefix + exc.reason] += 1
        except BadStatus as exc:
            out.rejected[f"status_{exc.reason}"] += 1
    return out


class HealthIngest:
    """Consumes health, status and cmd/res; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        batch_size: int = 200,
        flush_delay_s: float = 0.05,
        retry_delay_s: float = 1.0,
        subscriptions: Sequence[str] = SUBSCRIPTIONS,
        resend_on_connect: bool = False,
    ) -> None:
        if batch_size < 1 or flush_delay_s <= 0:
            raise ValueError("batch_size must be >= 1 and flush_delay_s > 0")
        self.subscriptions = tuple(subscriptions)
        # NATS: a device that (re)connects holding its current token gets it again, since
        # the node it re-subscribed on may replay no retained token (its index of retained
        # messages not rebuilt yet after a node failure); Mosquitto replays them
        self._resend_on_connect = resend_on_connect
        self._store = store
        self._clock = clock
        self._batch_size = batch_size
        self._flush_delay_s = flush_delay_s
        self._retry_delay_s = retry_delay_s
        self._pending: list[Incoming] = []
        self._wake = asyncio.Event()
        self.totals = BatchReport()
        self.cpu = StageCpu()
        self.received = 0  # messages offered (redeliveries included)
        self.batches = 0  # batches committed
        self.republished = 0  # current tokens republished to devices that came online behind
        self.on_batch: list[Callable[[int, float], None]] = []  # (size, seconds) per commit
        # given the devices that came online holding an older token than their current one
        # (a retained token missed while re-subscribing, e.g. during a NATS node's
        # failover): the app republishes their current tokens (IssuingService.republish)
        self.on_behind: Callable[[list[str]], Awaitable[Sequence[Issued]]] | None = None

    @property
    def pending(self) -> int:
        """Messages received and not yet committed (so not acked): this worker's backlog."""
        return len(self._pending)

    def offer(self, message: Incoming) -> None:
        """Queue a delivered message; bounded by the broker's in-flight window (unacked)."""
        self._pending.append(message)
        self.received += 1
        self._wake.set()

    def offer_batch(self, messages: list[Incoming]) -> None:
        """Queue delivered messages at once (:class:`common.mqtt.BatchReceiver`'s hand-over)."""
        self._pending.extend(messages)
        self.received += len(messages)
        self._wake.set()

    def process(self, batch: list[Incoming]) -> BatchReport:
        """Commit one batch (blocking; the consumer runs it in a thread; tests call it)."""
        started = time.thread_time()
        parsed = _parse(batch)
        parsed_at = time.thread_time()
        self.cpu.parse += parsed_at - started
        now = self._clock()
        report = BatchReport(rejected=parsed.rejected)
        try:
            self._store_parsed(parsed, report, now=now)
        finally:
            self.cpu.store += time.thread_time() - parsed_at
        return report

    def _store_parsed(self, parsed: _Parsed, report: BatchReport, *, now: int) -> None:
        with self._store.transaction() as tx:
            session = tx
            named = [r.device_id for r in parsed.reports]
            named += [device for device, _, _ in parsed.statuses]
            named += [result.device_id for result in parsed.results]
            known = bulk.known_devices(session, named)
            reports = [r for r in parsed.reports if r.device_id in known]
            report.rejected["unknown_device"] += len(parsed.reports) - len(reports)
            stored = bulk.store_rows(session, reports, now=now)
            report.stored = len(stored)
            report.duplicates = len(reports) - len(stored)
            statuses = [s for s in parsed.statuses if s[0] in known]
            report.rejected["status_unknown_device"] += len(parsed.statuses) - len(statuses)
            bulk.record_statuses(session, statuses, now=now)
            report.statuses = len(statuses)
            holding = {
                device: version
                for device, online, version in statuses
                if online and version is not None
            }
            if holding:
                current = device_queries.current_tokens(session, list(holding))
                connecting = parsed.connecting if self._resend_on_connect else set()
                report.behind = sorted(
                    device
                    for device, held in holding.items()
                    if device in current
                    and (
                        current[device].ver > held
                        or (device in connecting and current[device].ver == held)
                    )
                )
            for result in parsed.results:
                outcome = repo.answer_command(
                    session,
                    command_id=result.id,
                    device_id=result.device_id,
                    ok=result.ok,
                    result=result.result
                    if result.ok
                    else {"reason": result.error_reason, "detail": result.error_detail},
                    now=now,
                )
                if outcome.status == "answered":
                    report.answers += 1
                elif outcome.status == "unknown_command":
                    report.rejected["cmd_res_unknown_command"] += 1
            report.rejected = +report.rejected  # drop zero counts
            if report.rejected:
                repo.bump_rejects(session, report.rejected, now=now)

    def commit(self, batch: list[Incoming]) -> BatchReport:
        """:meth:`process`, isolating a message the database refuses (a constraint).

        A device deleted between the known-device check and the insert would fail
        the whole batch on every retry; split, the one message is counted as
        ``store_error`` and acked, the others stored. A database that is down
        (other errors) still raises, and the batch is retried whole.
        """
        try:
            return self.process(batch)
        except IntegrityError:
            if len(batch) > 1:
                done = BatchReport()
                for message in batch:
                    one = self.commit([message])
                    done.stored += one.stored
                    done.duplicates += one.duplicates
                    done.statuses += one.statuses
                    done.answers += one.answers
                    done.rejected.update(one.rejected)
                    done.behind += one.behind
                return done
            _log.warning("health message on %s refused by the database", batch[0].topic)
            refused = BatchReport(rejected=Counter({"store_error": 1}))
            with self._store.transaction() as tx:
                repo.bump_rejects(tx, refused.rejected, now=self._clock())
            return refused

    async def _catch_up(self, devices: list[str]) -> None:
        """Republish the current tokens of devices that came online behind; a failure is
        logged, never raised: it would end the ingest (the refresh job and the device's
        next status try again). A token the broker did not take is logged by the
        publisher and put back in the outbox; the database may fail too (reading the
        tokens, or putting them back)."""
        assert self.on_behind is not None
        try:
            results = await self.on_behind(devices)
        except SQLAlchemyError as exc:
            _log.warning("tokens of %d devices behind not republished: %s", len(devices), exc)
            return
        done = sum(1 for issued in results if issued.published)
        self.republished += done
        if done:
            _log.info("republished the current token of %d devices that were behind", done)
        if done < len(results):
            _log.warning(
                "tokens of %d devices behind not republished; the refresh job retries",
                len(results) - done,
            )

    def _account(self, done: BatchReport) -> None:
        total = self.totals
        total.stored += done.stored
        total.duplicates += done.duplicates
        total.statuses += done.statuses
        total.answers += done.answers
        total.rejected.update(done.rejected)
        if done.rejected:
            _log.info("health ingest refused %s", dict(done.rejected))

    async def run(self) -> None:
        """Flush batches until cancelled; acks follow each commit."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            if len(self._pending) < self._batch_size:
                await asyncio.sleep(self._flush_delay_s)
            batch = self._pending[: self._batch_size]
            began = time.perf_counter()
            try:
                done = await asyncio.to_thread(self.commit, batch)
            except SQLAlchemyError as exc:
                _log.warning(
                    "health batch of %d not committed (%s); retrying in %.1fs",
                    len(batch),
                    type(exc).__name__,
                    self._retry_delay_s,
                )
                await asyncio.sleep(self._retry_delay_s)
                continue
            del self._pending[: len(batch)]
            for message in batch:
                message.ack()
            self.batches += 1
            elapsed = time.perf_counter() - began
            for observe in self.on_batch:
                observe(len(batch), elapsed)
            self._account(done)
            if done.behind and self.on_behind is not None:
                await self._catch_up(done.behind)
