"""A reconnect storm: many light devices that verify and enforce their retained token.

A :class:`StormDevice` is lighter than a full agent (no SQLite store or outbox,
no firmware emulator, no local API) but keeps what a broker restart tests:

* the agent's own MQTT session (:class:`agent.session.MqttSession`: its own
  login, client id = device id, the agent's backoff and failover, the retained
  ``online`` status on each connection, subscriptions to its entitlement,
  ``cmd`` and the key set);
* every entitlement message is verified in full with the agent's verifier:
  :func:`agent.verifier.accept_token` from the device's provisioned root key
  set, as an agent with an empty store would (COSE Ed25519 signature under a
  token key of the key set, ``sub`` = this device, its installation, the
  counter epoch, freshness at trusted time), then applied to the state it holds
  as the running agent does (a byte-identical token is a no-op there); the
  decisions (:meth:`agent.verifier.TrustState.features`) go to an enforcer that
  records them, and are compared with what the cloud granted the device's
  installation;
* health reports (valid :mod:`protocol.health` JSON, ``seq`` from 1) drained by
  the agent's own :class:`agent.health.HealthPublisher` (QoS 1, a report counts
  as sent only after its PUBACK, unacked ones stay queued and are sent again)
  from an in-memory outbox (:class:`MemoryOutbox`, named as the simulator's)
  that keeps sent reports, and the agent's :class:`agent.commands.CommandHandler`
  answering the cloud's ``resend_health`` (its gap repair: Mosquitto 2.0 does not
  restore a persistent session's ``$share`` subscription after a restart, so what
  devices publish before a cloud worker subscribes again is PUBACKed and dropped).

:func:`seed_storm` gives a registered fleet (:func:`simulators.fleet.register_in_store`)
its grants and queues every device on the cloud's re-sign queue, so the running
cloud's re-sign job signs and publishes (retained) each device's first token.
:func:`run_storm_shard` runs a shard of devices in one event loop; large fleets
are split over processes (:func:`storm_worker_main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.synchronize
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.commands import CommandHandler
from agent.health import HealthPublisher
from agent.outbox import Queued
from agent.session import Connection, MqttSession, quiet_closed_sockets
from agent.verifier import Outcome, TrustState, accept_token, provision
from common.tasks import cancel_and_wait
from protocol.errors import UntrustedDataError
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic
from simulators.fleet import DeviceLogin
from simulators.fleet_worker import raise_fd_limit

__all__ = [
    "DeviceResult",
    "MemoryOutbox",
    "StormControl",
    "StormDevice",
    "StormJob",
    "StormStats",
    "expected_features",
    "run_storm_shard",
    "losses",
    "seed_storm",
    "stored_by_device",
    "tokens_pending",
    "storm_worker_main",
]

log = logging.getLogger(__name__)
YEAR_S = 365 * 86_400
_STATS_EVERY_S = 1.0


def expected_features(installation_number: int) -> dict[str, bool]:
    """What :func:`seed_storm` grants installation number ``n``: remote access to all,
    voice control to every other one (so a token for the wrong device would show)."""
    granted = {"remote_access": True}
    if installation_number % 2 == 0:
        granted["voice_control"] = True
    return granted


def seed_storm(database_url: str, *, now: int) -> dict[str, dict[str, bool]]:
    """Grant every installation its services and queue all devices for a first token.

    The cloud's re-sign job (``entitle cloud serve``, every ``resign_interval_s``)
    then signs, stores and publishes retained each device's token, as it does
    after a sweep. Returns each device's expected decisions (feature -> allowed).
    """
    from sqlalchemy import select

    from cloud.database import Store
    from cloud.devices import queries as device_queries
    from cloud.devices.tables import DeviceRow

    expected: dict[str, dict[str, bool]] = {}
    with Store.open(database_url) as store:
        with store.transaction() as tx:
            rows = tx.execute(select(DeviceRow.id, DeviceRow.installation_id)).all()
        installations = sorted({inst for _, inst in rows})
        numbers = {inst: n for n, inst in enumerate(installations)}
        for start in range(0, len(installations), 500):
            with store.transaction() as tx:
                for inst in installations[start : start + 500]:
                    for feature in expected_features(numbers[inst]):
                        device_queries.upsert_grant(
                            tx,
                            installation_id=inst,
                            feature=feature,
                            until=now + YEAR_S,
                            params={},
                            source="storm",
                            now=now,
                        )
        with store.transaction() as tx:
            device_queries.enqueue_resign(tx, [device for device, _ in rows], now=now)
    for device, inst in rows:
        expected[device] = expected_features(numbers[inst])
    return expected


class MemoryOutbox:
    """Simulator's outbox: the :class:`agent.outbox.Outbox` calls the publisher and the
    ``resend_health`` command make, in memory (a report leaves the queue once acked
    and is kept, so the cloud's gap repair can ask for it again)."""

    def __init__(self) -> None:
        self._queue: dict[int, bytes] = {}  # unsent, in seq order
        self._sent: dict[int, bytes] = {}
        self._acked: set[int] = set()  # ever PUBACKed (a resent report stays counted)
        self.last_seq = 0
        self.resent = 0

    def add(self, body: bytes) -> None:
        self._queue[self.last_seq] = body

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    @property
    def acked(self) -> set[int]:
        return self._acked

    def pending(self, limit: int = 100) -> list[Queued]:
        out = []
        for seq, body in self._queue.items():
            if len(out) >= limit:
                break
            out.append(Queued(seq, body))
        return out

    def mark_sent(self, seqs: Sequence[int], *, now: int) -> int:
        for seq in seqs:
            body = self._queue.pop(seq, None)
            if body is not None:
                self._sent[seq] = body
                self._acked.add(seq)
        return len(seqs)

    def resend(self, from_seq: int, to_seq: int) -> dict[str, Any]:
        """The ``resend_health`` command's answer, as :meth:`agent.runtime.Agent` gives it."""
        wanted = range(from_seq, to_seq + 1) if from_seq <= to_seq else range(0)
        requeued = [seq for seq in wanted if seq in self._sent]
        already = sum(1 for seq in wanted if seq in self._queue)
        for seq in requeued:
            self._queue[seq] = self._sent.pop(seq)
        if requeued:
            self._queue = dict(sorted(self._queue.items()))
        self.resent += len(requeued)
        missing = [seq for seq in wanted if seq not in self._queue]
        return {"requeued": len(requeued), "already_queued": already, "not_held": _ranges(missing)}

    def __len__(self) -> int:
        return len(self._queue)


def _ranges(seqs: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for seq in seqs:
        if out and out[-1][1] == seq - 1:
            out[-1][1] = seq
        else:
            out.append([seq, seq])
    return out


@dataclass
class DeviceResult:
    """One device's timeline and outcome (monotonic seconds)."""

    device_id: str
    connects: list[float] = field(default_factory=list)
    enforced: list[float] = field(default_factory=list)  # verified + enforced + right
    wrong: int = 0  # a verified token whose decisions differ from the grants
    rejected: dict[str, int] = field(default_factory=dict)
    collected: int = 0
    acked_seqs: tuple[int, ...] = ()
    queued: int = 0
    resent: int = 0  # reports queued again by the cloud's resend_health


class StormDevice:
    """One light device; see the module docstring for what it does and does not do."""

    def __init__(
        self,
        login: DeviceLogin,
        *,
        connection: Connection,
        root_keyset: bytes,
        expected: Mapping[str, bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = login.device_id
        self.kind = login.plan.kind
        self.expected = dict(expected)
        self.clock = clock
        self.provisioned = provision(self.device_id, root_keyset)
        self.state: TrustState = self.provisioned
        self.decisions: dict[str, bool] = {}
        self.result = DeviceResult(self.device_id)
        self._seen_connects = 0
        self.started_at = clock()
        self.session = MqttSession(connection, self.handle, status=self._status)
        self.outbox = MemoryOutbox()
        self.publisher = HealthPublisher(
            device_id=self.device_id,
            outbox=self.outbox,  # type: ignore[arg-type]  # the simulator's outbox
            publisher=self.session,
            clock=clock,
        )
        self.commands = CommandHandler(
            device_id=self.device_id,
            firmware=None,
            publisher=self.session,
            resend_health=self._resend_health,
        )

    def _resend_health(self, from_seq: int, to_seq: int) -> dict[str, Any]:
        done = self.outbox.resend(from_seq, to_seq)
        if done["requeued"]:
            self.publisher.notify()
        return done

    def _status(self) -> dict[str, object]:
        """Called by the session on each new connection (its retained ``online``)."""
        if self.session.connects > self._seen_connects:
            self._seen_connects = self.session.connects
            self.result.connects.append(time.monotonic())
        return {"device_id": self.device_id, "token_ver": self.state.ver}

    async def handle(self, topic: str, payload: bytes) -> None:
        if topic == device_topic(self.device_id, "cmd"):
            self.commands.submit(payload)  # the cloud's gap repair asks resend_health
            return
        if topic != device_topic(self.device_id, "entitlement") or not payload:
            return  # the key set does not change in a storm
        local_now = int(self.clock())
        try:
            # in full, as an agent with an empty store: signature, sub, inst, epoch, time
            fresh, _ = accept_token(self.provisioned, payload, local_now=local_now)
            held, outcome = accept_token(self.state, payload, local_now=local_now)
        except UntrustedDataError as exc:
            self.result.rejected[exc.reason] = self.result.rejected.get(exc.reason, 0) + 1
            return
        if outcome is Outcome.ACCEPTED:
            self.state = held
        if fresh.ver != self.state.ver:
            self.result.rejected["not_current"] = self.result.rejected.get("not_current", 0) + 1
            return
        self.enforce(fresh.features(local_now=local_now))

    def enforce(self, decisions: Mapping[str, tuple[bool, str]]) -> None:
        """The enforcer: record the decisions and check them against the grants."""
        self.decisions = {name: allowed for name, (allowed, _) in decisions.items()}
        if self.decisions == self.expected:
            self.result.enforced.append(time.monotonic())
        else:
            self.result.wrong += 1

    def collect(self) -> None:
        """Build one health report and queue it (the agent's collector, lighter)."""
        seq = self.outbox.next_seq()
        report = HealthReport(
            device_id=self.device_id,
            seq=seq,
            ts=int(self.clock()),
            kind=self.kind,
            uptime_s=int(self.clock() - self.started_at),
            fw="storm-1.0",
            cpu_temp_c=45.0,
            mem_used_pct=30.0,
        )
        self.outbox.add(health_to_json(report))
        self.result.collected += 1
        self.publisher.notify()

    def finish(self) -> DeviceResult:
        self.result.acked_seqs = tuple(sorted(self.outbox.acked))
        self.result.queued = len(self.outbox)
        self.result.resent = self.outbox.resent
        return self.result

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.session.run(), name=f"session-{self.device_id}")
            tasks.create_task(self.publisher.run(), name=f"health-{self.device_id}")
            tasks.create_task(self.commands.run(), name=f"commands-{self.device_id}")


@dataclass(frozen=True, slots=True)
class StormJob:
    """What one shard runs (picklable: it crosses to a spawned process)."""

    shard: int
    logins: Sequence[DeviceLogin]
    expected: Mapping[str, Mapping[str, bool]]
    host: str
    port: int
    root_keyset: bytes
    interval_s: float
    ramp_s: float
    protocol: int = 5
    fallbacks: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class StormStats:
    """A shard's figures at one moment; ``results`` only in the last one."""

    shard: int
    devices: int
    started: int
    connected: int
    enforced: int  # devices enforcing the right decisions (at least once)
    reconnected: int  # connected again since the mark
    reenforced: int  # verified and enforced a token again since the mark
    wrong: int
    rejected: int
    collected: int
    acked: int
    queued: int
    resent: int = 0
    # connected again since the mark and not re-enforced since that (last) connect: a
    # device not cut off may re-enforce too (a QoS 1 redelivery, a republish), so the
    # counts of reconnected and reenforced need not match when every device is back
    waiting: int = 0
    done: bool = False
    results: tuple[DeviceResult, ...] = ()


@dataclass
class StormControl:
    """How the runner steers shards: the restart mark (monotonic; 0 before), whether
    devices still build reports, and when to stop. In-process: plain callables."""

    mark: Callable[[], float]
    reporting: Callable[[], bool]
    stop: Callable[[], bool]


def _stats(job: StormJob, devices: list[StormDevice], mark: float, *, done: bool) -> StormStats:
    connected = enforced = reconnected = reenforced = waiting = wrong = rejected = 0
    collected = acked = queued = resent = 0
    for d in devices:
        r = d.result
        connected += d.session.connected.is_set()
        enforced += bool(r.enforced)
        if mark:
            back = bool(r.connects and r.connects[-1] >= mark)
            reconnected += back
            reenforced += bool(r.enforced and r.enforced[-1] >= mark)
            waiting += back and not (r.enforced and r.enforced[-1] >= r.connects[-1])
        wrong += r.wrong
        rejected += sum(r.rejected.values())
        collected += r.collected
        acked += len(d.outbox.acked)
        queued += len(d.outbox)
        resent += d.outbox.resent
    return StormStats(
        shard=job.shard,
        devices=len(job.logins),
        started=len(devices),
        connected=connected,
        enforced=enforced,
        reconnected=reconnected,
        reenforced=reenforced,
        wrong=wrong,
        rejected=rejected,
        collected=collected,
        acked=acked,
        queued=queued,
        resent=resent,
        waiting=waiting,
        done=done,
        results=tuple(d.finish() for d in devices) if done else (),
    )


async def run_storm_shard(
    job: StormJob, control: StormControl, report: Callable[[StormStats], None]
) -> StormStats:
    """Run the shard's devices until ``control.stop()``; figures to ``report`` every second."""
    with quiet_closed_sockets(asyncio.get_running_loop()):
        return await _run(job, control, report)


async def _run(
    job: StormJob, control: StormControl, report: Callable[[StormStats], None]
) -> StormStats:
    devices: list[StormDevice] = []
    tasks: list[asyncio.Task[None]] = []
    step = job.ramp_s / max(1, len(job.logins))
    rng = random.Random(job.shard)
    started = time.monotonic()
    due: list[float] = []  # next report per device (monotonic)
    try:
        for index, login in enumerate(job.logins):
            delay = started + index * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if control.stop():
                break
            # a cluster's devices spread over its nodes: each starts on its own one
            addresses = ((job.host, job.port), *job.fallbacks)
            turn = index % len(addresses)
            (host, port), *others = (*addresses[turn:], *addresses[:turn])
            device = StormDevice(
                login,
                connection=Connection(
                    host=host,
                    port=port,
                    username=login.device_id,
                    password=login.password,
                    protocol=job.protocol,
                    fallbacks=tuple(others),
                ),
                root_keyset=job.root_keyset,
                expected=job.expected[login.device_id],
            )
            devices.append(device)
            due.append(time.monotonic() + rng.uniform(0, job.interval_s))
            tasks.append(asyncio.create_task(device.run(), name=f"device-{login.device_id}"))
        last_stats = 0.0
        was_reporting = True
        while not control.stop():
            now = time.monotonic()
            reporting = control.reporting()
            if reporting and not was_reporting:  # (re)started: spread over one interval
                due = [now + rng.uniform(0, job.interval_s) for _ in devices]
            was_reporting = reporting
            if reporting:
                for i, device in enumerate(devices):
                    if due[i] <= now:
                        device.collect()
                        due[i] = max(due[i] + job.interval_s, now)
            if now - last_stats >= _STATS_EVERY_S:
                report(_stats(job, devices, control.mark(), done=False))
                last_stats = now
            await asyncio.sleep(0.05)
    finally:
        await cancel_and_wait(tasks)  # a device swallowing one cancel gets another
        await asyncio.sleep(0)
    final = _stats(job, devices, control.mark(), done=True)
    report(final)
    return final


def tokens_pending(database_url: str) -> int:
    """Devices still queued for a token plus tokens stored and not yet published."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            queued = conn.execute(text("SELECT COUNT(*) FROM token_resign_queue")).scalar_one()
            unsent = conn.execute(text("SELECT COUNT(*) FROM entitlement_outbox")).scalar_one()
    finally:
        engine.dispose()
    return int(queued) + int(unsent)


def stored_by_device(database_url: str) -> dict[str, list[int]]:
    """Each device's stored health report seqs, one entry per row."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    stored: dict[str, list[int]] = {}
    try:
        with engine.connect() as conn:
            for device, seq in conn.execute(text("SELECT device_id, seq FROM health_reports")):
                stored.setdefault(str(device), []).append(int(seq))
    finally:
        engine.dispose()
    return stored


def losses(results: Sequence[DeviceResult], stored: Mapping[str, list[int]]) -> dict[str, int]:
    """PUBACKed reports not stored, rows stored twice, rows never PUBACKed; all zero
    when every acknowledged report is stored exactly once."""
    lost = duplicates = not_acked = 0
    for r in results:
        rows = stored.get(r.device_id, [])
        kept = set(rows)
        duplicates += len(rows) - len(kept)
        lost += len(set(r.acked_seqs) - kept)
        not_acked += len(kept - set(r.acked_seqs))
    return {"lost": lost, "duplicates": duplicates, "stored_not_acked": not_acked}


def storm_worker_main(
    job: StormJob,
    queue: multiprocessing.Queue[StormStats],
    mark: Any,  # multiprocessing.Value("d")
    reporting: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Entry point of a spawned shard process."""
    logging.basicConfig(level=logging.ERROR, format=f"storm shard {job.shard}: %(message)s")
    raise_fd_limit()
    control = StormControl(
        mark=lambda: float(mark.value), reporting=reporting.is_set, stop=stop.is_set
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_storm_shard(job, control, queue.put))
