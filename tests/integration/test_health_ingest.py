"""Health ingest through a real Mosquitto (issue 9 must-shows 2, 4, 5).

- must-show 2: reports delivered more than once are stored once; an
  ``entitle cloud serve`` process killed -9 while it holds an uncommitted batch
  and the broker restarted while a batch is held, both mid-stream, still leave
  every report stored exactly once; two workers share the stream.
- must-show 5: malformed JSON, wrong version, oversized payloads and a report
  naming another device, published as raw MQTT on the device's own topic, are
  counted and never stored while the consumer keeps going. Publishing on
  *another* device's topic is refused by the broker ACL itself (shown here);
  the cloud's own check for that case is exercised by calling the handler
  directly in tests/cloud/health/test_health_ingest.py.
- must-show 4: a ticket, a self-test command round trip with a scripted
  device answering on ``cmd/res``, and the RMA approval (409 before).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from agent.commands import CommandHandler
from agent.health import HealthPublisher
from agent.outbox import Outbox
from agent.session import Connection, MqttSession
from broker.mosquitto import find_free_port
from cloud import create_app
from cloud.accounts.apikeys import bootstrap_api_key
from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.health import queries as repo
from cloud.health.tables import HealthReportRow
from cloud.settings import CloudSettings
from protocol.commands import ok_result, parse_command, result_to_json
from protocol.health import HealthReport, health_to_json, parse_health
from protocol.topics import device_topic
from tests.broker_fixtures import FixtureBroker
from tests.cloud.harness import FakeClock, client, new_api_key, running
from tests.waiting import HANG_S

pytestmark = pytest.mark.usefixtures("require_mosquitto")

# One cloud worker: the bridge (persistent session, manual acks) and the ingest.
# SIGTERM prints its totals as JSON and exits.
WORKER = """
import asyncio, json, signal, sys, time
from cloud.bridge import MqttBridge
from cloud.health.ingest import HealthIngest
from cloud.database import Store
from common.settings import parse_broker_url

async def main():
    store = Store.open(sys.argv[2], migrate=False)
    ingest = HealthIngest(store, clock=lambda: int(time.time()), batch_size=int(sys.argv[3]))
    bridge = MqttBridge(parse_broker_url(sys.argv[1]), keyset_message=lambda: b"keys",
                        consumer=ingest, backoff_base_s=0.05, backoff_cap_s=0.5)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(bridge.run()), asyncio.create_task(ingest.run())]
    await bridge.wait_connected(10)  # and subscribed
    print("started", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    t = ingest.totals
    print(json.dumps({"stored": t.stored, "duplicates": t.duplicates,
                      "rejected": dict(t.rejected)}), flush=True)

asyncio.run(main())
"""


class Worker:
    """A cloud worker in its own process (so that it can be killed -9)."""

    def __init__(self, broker: FixtureBroker, user: str, database_url: str, batch: int = 50):
        self.args = [sys.executable, "-c", WORKER, broker.url(user), database_url, str(batch)]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "started"
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=20)
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[FixtureBroker]:
    """Mosquitto (persistence on) with two cloud worker logins."""
    with FixtureBroker(
        tmp_path / "broker", clouds=("cloud-a", "cloud-b"), persistence=True
    ) as running_broker:
        yield running_broker


def prepare(database_url: str, devices: list[str]) -> Store:
    store = Store.open(database_url)
    with store.transaction() as tx:
        device_queries.add_installation(tx, installation_id="inst-1", name="Site", now=0)
        for device in devices:
            device_queries.add_device(
                tx,
                device_id=device,
                installation_id="inst-1",
                kind=DeviceKind.GATEWAY,
                password_hash="x",
                now=0,
            )
    return store


def stored(store: Store) -> int:
    with store.transaction() as tx:
        return int(tx.scalar(select(func.count()).select_from(HealthReportRow)) or 0)


def distinct_stored(store: Store) -> int:
    with store.transaction() as tx:
        keys = tx.execute(select(HealthReportRow.device_id, HealthReportRow.seq)).all()
    return len(set(keys))


def report(device_id: str, seq: int, *, ts0: int = 1_767_225_600) -> bytes:
    return health_to_json(
        HealthReport(
            device_id=device_id,
            seq=seq,
            ts=ts0 + seq,
            kind="gateway",
            uptime_s=seq,
            cpu_temp_c=40.0,
        )
    )


async def wait_for(
    predicate: Any, *, within: float, what: str, explain: Callable[[], str] | None = None
) -> None:
    """Poll ``predicate`` until true; on timeout fail naming ``what`` (and ``explain()``,
    e.g. the processes' log, so a failure in CI says what the processes were doing)."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(predicate):
        if time.monotonic() >= deadline:
            detail = "" if explain is None else f"\n--- log ---\n{explain()}"
            raise AssertionError(f"timed out waiting for {what}{detail}")
        await asyncio.sleep(0.05)


async def publish_all(
    broker: FixtureBroker, device_id: str, seqs: list[int], *, copies: int = 1
) -> None:
    """At-least-once publisher: each report is re-sent until the broker PUBACKs it."""
    pending = [seq for seq in seqs for _ in range(copies)]
    while pending:
        try:
            async with broker.client(device_id, timeout=2) as mqtt:
                while pending:
                    await mqtt.publish(
                        device_topic(device_id, "health"), report(device_id, pending[0]), qos=1
                    )
                    pending.pop(0)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)  # broker restarting: try again


class CloudServe:
    """``entitle cloud serve`` in its own process: the real cloud worker, killable with -9."""

    def __init__(
        self,
        root: Path,
        broker: FixtureBroker,
        user: str,
        database_url: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.port = find_free_port()
        self.env = {
            **os.environ,
            **(env or {}),
            "ENTITLE_DATA_DIR": str(root / "data"),
            "ENTITLE_DATABASE_URL": database_url,
            "ENTITLE_BROKER_URL": broker.url(user),
            "ENTITLE_HTTP_PORT": str(self.port),
        }
        self.key = bootstrap_api_key(database_url, name=f"test {self.port}", now=int(time.time()))
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> CloudServe:
        await asyncio.to_thread(self._spawn)
        await self.wait_connected()
        return self

    def _spawn(self) -> None:
        with (self.root / "cloud.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "entitle.cli", "cloud", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).parents[2],
            )

    def ingest(self) -> dict[str, Any]:
        assert self.process is not None and self.process.poll() is None, self.log()
        got = httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/health/ingest",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=5,
        )
        got.raise_for_status()
        return dict(got.json())

    async def wait_connected(self) -> None:
        """Until its bridge is connected and subscribed (so nothing published is missed)."""

        def connected() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return bool(self.ingest()["connected"])
            except httpx.HTTPError:
                return False

        await wait_for(connected, within=30, what="cloud serve connected to the broker")

    def log(self) -> str:
        return (self.root / "cloud.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class Publishers:
    """One at-least-once publisher per device, sending seq 1, 2, ... until stopped.

    ``published[device]`` is the last seq the broker PUBACKed, so the test can
    show the stream was still going after each event.
    """

    def __init__(self, broker: FixtureBroker, devices: list[str]) -> None:
        self.broker = broker
        self.published = dict.fromkeys(devices, 0)
        self.stopping = asyncio.Event()
        self.ts0 = int(time.time())  # recent: the cloud's retention job folds old reports

    async def run(self, device_id: str) -> None:
        seq = 1
        while not self.stopping.is_set():
            try:
                async with self.broker.client(device_id, timeout=2) as mqtt:
                    while not self.stopping.is_set():
                        payload = report(device_id, seq, ts0=self.ts0)
                        await mqtt.publish(device_topic(device_id, "health"), payload, qos=1)
                        self.published[device_id] = seq
                        seq += 1
                        await asyncio.sleep(0.01)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # broker restarting: re-send ``seq`` after it

    def total(self) -> int:
        return sum(self.published.values())

    async def wait_past(self, mark: dict[str, int], what: str) -> None:
        """Every publisher published something after ``mark`` was taken."""

        def past() -> bool:
            return all(self.published[d] > n for d, n in mark.items())

        await wait_for(past, within=30, what=f"every publisher publishing after {what}")


class AgentPublishers:
    """Devices delivering through the agent's own path: outbox, publisher, session, commands.

    Each appends a report every 10 ms to its :class:`~agent.outbox.Outbox`; the
    :class:`~agent.health.HealthPublisher` sends them over an
    :class:`~agent.session.MqttSession` and marks them sent on PUBACK, and the
    :class:`~agent.commands.CommandHandler` answers the cloud's ``resend_health``.
    ``published[device]`` is the highest seq the broker PUBACKed.
    """

    def __init__(self, broker: FixtureBroker, devices: list[str], root: Path) -> None:
        self.broker = broker
        self.root = root
        self.published = dict.fromkeys(devices, 0)
        self.stopping = asyncio.Event()
        self.ts0 = int(time.time())
        self.appended = dict.fromkeys(devices, 0)

    async def run(self, device_id: str) -> None:
        """Until cancelled: keep appending until ``stopping``, then keep delivering."""
        outbox = Outbox(self.root / device_id / "outbox.db")
        connection = Connection(
            host=self.broker.host,
            port=self.broker.port,
            username=device_id,
            password=self.broker.passwords[device_id],
        )

        async def on_message(topic: str, payload: bytes) -> None:
            if topic == device_topic(device_id, "cmd"):
                commands.submit(payload)

        session = MqttSession(connection, on_message, backoff_base=0.05, backoff_cap=0.5)
        counting = _CountingPublisher(session, self.published, device_id)
        publisher = HealthPublisher(
            device_id=device_id,
            outbox=outbox,
            publisher=counting,
            publish_timeout_s=2,
            retry_s=0.1,
        )

        def resend(first: int, last: int) -> dict[str, Any]:
            done = outbox.resend(first, last)
            publisher.notify()
            return {"requeued": done.requeued, "not_held": [list(r) for r in done.not_held]}

        commands = CommandHandler(
            device_id=device_id, firmware=None, publisher=session, resend_health=resend
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(session.run(), name=f"{device_id}-session")
                tasks.create_task(publisher.run(), name=f"{device_id}-health")
                tasks.create_task(commands.run(), name=f"{device_id}-commands")
                n = 0
                while not self.stopping.is_set():
                    n += 1
                    body = parse_health(
                        report(device_id, n, ts0=self.ts0), topic_device_id=device_id
                    )
                    self.appended[device_id] = outbox.append(body)
                    publisher.notify()
                    await asyncio.sleep(0.01)
        finally:
            outbox.close()

    def total(self) -> int:
        """Reports appended; every one was PUBACKed once :meth:`drained`."""
        return sum(self.appended.values())

    def drained(self) -> bool:
        """The publisher sends in seq order: the last seq acked means all before it were."""
        return all(self.published[d] >= n for d, n in self.appended.items())

    async def wait_past(self, mark: dict[str, int], what: str) -> None:
        def past() -> bool:
            return all(self.published[d] > n for d, n in mark.items())

        await wait_for(past, within=30, what=f"every device publishing after {what}")


class _CountingPublisher:
    """The session's publish, noting the highest health seq PUBACKed."""

    def __init__(self, session: MqttSession, published: dict[str, int], device_id: str) -> None:
        self.session = session
        self.published = published
        self.device_id = device_id

    @property
    def connected(self) -> asyncio.Event:
        return self.session.connected

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float) -> None:
        await self.session.publish(topic, payload, timeout_s=timeout_s)
        seq = int(json.loads(payload)["seq"])
        self.published[self.device_id] = max(self.published[self.device_id], seq)


class IngestLock:
    """Holds ``health_reports`` locked (PostgreSQL), so no worker can commit a batch.

    A worker then sits with its batch received and uncommitted; we see its
    INSERT waiting on the lock in ``pg_stat_activity`` and its backlog in
    ``/health/ingest``: the state a kill -9 must land in to mean anything.
    """

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url.replace("+psycopg", ""))
        self.conn.execute("LOCK TABLE health_reports IN EXCLUSIVE MODE")  # reads still pass

    def insert_waiting(self) -> bool:
        with psycopg.connect(self.conn.info.dsn, autocommit=True) as probe:
            row = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE 'INSERT INTO health_reports%'"
            ).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


async def hold_a_batch(url: str, cloud: CloudServe) -> tuple[IngestLock, int]:
    """Lock the table; return once the worker's INSERT waits on it with reports pending."""
    lock = IngestLock(url)
    await wait_for(lock.insert_waiting, within=20, what="the worker's INSERT waiting on the lock")
    pending = cloud.ingest()["pending"]
    assert pending > 0  # nothing can commit while we hold the lock, so these stay pending
    return lock, pending


@pytest.fixture
async def stream(
    clouds: FixtureBroker, postgres_url: str
) -> AsyncIterator[tuple[Store, Publishers]]:
    """4 devices publishing (not started until the test's cloud is connected)."""
    devices = [f"gw-{i}" for i in range(4)]
    for device in devices:
        clouds.add_device(device)
    store = prepare(postgres_url, devices)
    publishers = Publishers(clouds, devices)
    yield store, publishers
    publishers.stopping.set()
    store.close()


async def finish(store: Store, publishers: Publishers, tasks: list[asyncio.Task[None]]) -> int:
    """Stop publishing; wait until all of it is stored; the number of reports published."""
    publishers.stopping.set()
    await asyncio.gather(*tasks)
    total = publishers.total()
    await wait_for(lambda: stored(store) >= total, within=30, what="every report")
    await asyncio.sleep(0.5)  # late redeliveries, if any, must change nothing
    return total


async def test_cloud_killed_mid_batch_stores_every_report_once(
    clouds: FixtureBroker, postgres_url: str, tmp_path: Path, stream: Any
) -> None:
    """Must-show 2 (kill -9), on the real ``entitle cloud serve`` with PostgreSQL.

    With ``health_reports`` locked the worker's batch is received and uncommitted
    (its INSERT waits on the lock, ``pending`` > 0): it is killed -9 then. A new
    worker (same login, same persistent session) gets the unacked deliveries again
    and stores them while the publishers keep publishing; every report published
    (PUBACKed, counted per publisher) is stored exactly once. PostgreSQL only: SQLite
    takes the write lock even to read, so the lock would hold the API too.
    """
    store, publishers = stream
    cloud = await CloudServe(tmp_path, clouds, "cloud-a", postgres_url).start()
    tasks = [asyncio.create_task(publishers.run(d)) for d in publishers.published]
    lock: IngestLock | None = None
    try:
        await wait_for(lambda: stored(store) >= 200, within=30, what="the first reports")
        lock, held_at_kill = await hold_a_batch(postgres_url, cloud)
        cloud.kill()  # kill -9 with a batch received and not committed
        at_kill = dict(publishers.published)
        stored_at_kill = stored(store)
        lock.release()
        lock = None
        cloud = await CloudServe(tmp_path, clouds, "cloud-a", postgres_url).start()
        await publishers.wait_past(at_kill, "the kill")
        total = await finish(store, publishers, tasks)
        totals = await asyncio.to_thread(cloud.ingest)
    finally:
        if lock is not None:
            lock.release()
        cloud.stop()
    assert stored_at_kill + held_at_kill <= total
    assert stored(store) == total == distinct_stored(store)
    assert totals["stored"] == total - stored_at_kill  # the held batch too, by the new worker
    assert totals["rejected"] == {}


# gap repair on a short clock, so that the test sees it within its waits
GAP_REPAIR_ENV = {
    "ENTITLE_HEALTH_GAP_INTERVAL_S": "0.5",
    "ENTITLE_HEALTH_GAP_GRACE_S": "2",
    "ENTITLE_HEALTH_GAP_BACKOFF_S": "10",
}


async def test_broker_restarted_mid_batch_stores_every_report_once(
    clouds: FixtureBroker, postgres_url: str, tmp_path: Path
) -> None:
    """Must-show 2 (broker restart), on the real ``entitle cloud serve`` with PostgreSQL.

    Locked as above, the broker restarts while the worker holds a batch: the broker
    redelivers those unacked messages, so once unlocked the worker commits the held
    copies and counts the redelivered ones as duplicates (at least what was held).

    Mosquitto 2.0 does not restore the session's ``$share`` subscription from its
    persistence file, so reports published after the broker is back and before the
    worker subscribes again are PUBACKed and dropped. The devices here deliver through
    the agent's own outbox, which keeps sent reports; the cloud's gap job asks for the
    missing seqs with ``resend_health``, and every report appended is stored once.

    The restart is Mosquitto's clean stop (it saves its persistence): a Mosquitto
    killed -9 loses what it PUBACKed since its last autosave; gap repair covers that too.
    """
    devices = [f"gw-{i}" for i in range(4)]
    for device in devices:
        clouds.add_device(device)
    store = prepare(postgres_url, devices)
    agents = AgentPublishers(clouds, devices, tmp_path / "agents")
    cloud = await CloudServe(tmp_path, clouds, "cloud-a", postgres_url, GAP_REPAIR_ENV).start()
    tasks = [asyncio.create_task(agents.run(d)) for d in devices]
    lock: IngestLock | None = None
    try:
        await wait_for(lambda: stored(store) >= 200, within=30, what="the first reports")
        lock, held = await hold_a_batch(postgres_url, cloud)
        at_restart = dict(agents.published)
        await asyncio.to_thread(clouds.restart)  # broker restarted mid-stream
        await cloud.wait_connected()  # the same session again: unacked ones come back
        lock.release()
        lock = None
        await agents.wait_past(at_restart, "the broker restart")
        agents.stopping.set()  # no new reports; the agents keep delivering and answering
        await wait_for(agents.drained, within=30, what="every outbox drained (all PUBACKed)")
        total = agents.total()
        await wait_for(lambda: stored(store) >= total, within=60, what="every report")
        await asyncio.sleep(0.5)  # late redeliveries, if any, must change nothing
        totals = await asyncio.to_thread(cloud.ingest)
        count, distinct = stored(store), distinct_stored(store)
    finally:
        if lock is not None:
            lock.release()
        cloud.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.close()
    assert totals["duplicates"] >= held > 0  # the held batch came back from the broker
    assert count == total == distinct
    assert totals["rejected"] == {}


async def test_two_workers_share_the_stream_and_duplicates_store_once(
    clouds: FixtureBroker, database_url: str
) -> None:
    devices = [f"cam-{i}" for i in range(3)]
    for device in devices:
        clouds.add_device(device)
    store = prepare(database_url, devices)
    per_device = 200
    a = Worker(clouds, "cloud-a", database_url, batch=20).start()
    b = Worker(clouds, "cloud-b", database_url, batch=20).start()
    try:
        await asyncio.gather(
            *(publish_all(clouds, d, list(range(1, per_device + 1)), copies=2) for d in devices)
        )
        total = per_device * len(devices)
        await wait_for(lambda: stored(store) >= total, within=60, what="every report")
        await asyncio.sleep(0.5)
        got_a, got_b = a.stop(), b.stop()
    finally:
        for w in (a, b):
            if w.process is not None and w.process.poll() is None:
                w.kill()
    assert stored(store) == total == distinct_stored(store)
    # both workers took part of the stream (which copy of a report lands first, and so
    # counts as "stored" rather than "duplicate", depends on batch timing)
    assert got_a["stored"] + got_a["duplicates"] > 0
    assert got_b["stored"] + got_b["duplicates"] > 0
    assert got_a["stored"] + got_b["stored"] == total
    assert got_a["duplicates"] + got_b["duplicates"] == total  # every second copy
    store.close()


async def test_bad_reports_over_mqtt_are_counted_not_stored(
    clouds: FixtureBroker, tmp_path: Path
) -> None:
    """Must-show 5 over the wire; the consumer goes on to store the good report after."""
    database_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    clouds.add_device("gw-1")
    clouds.add_device("gw-2")
    clouds.add_device("stranger")  # a broker login the cloud never registered
    store = prepare(database_url, ["gw-1", "gw-2"])
    worker = Worker(clouds, "cloud-a", database_url, batch=5).start()
    try:
        good = report("gw-1", 1)
        bad = {
            "bad_json": b"{not json",
            "wrong_version": json.dumps({**json.loads(good), "v": 9}).encode(),
            "too_large": b'{"v":1,"pad":"' + b"x" * 20_000 + b'"}',
            "wrong_device": report("gw-2", 5),  # gw-2's report, published by gw-1
        }
        async with clouds.client("gw-1") as mqtt:
            for payload in bad.values():
                await mqtt.publish(device_topic("gw-1", "health"), payload, qos=1)
        async with clouds.client("stranger") as mqtt:
            await mqtt.publish(device_topic("stranger", "health"), report("stranger", 1), qos=1)
        async with clouds.client("gw-1") as mqtt:
            # the ACL: gw-1 may not write gw-2's topic; Mosquitto drops it (MQTT 5 reason 0x87)
            await mqtt.publish(device_topic("gw-2", "health"), report("gw-2", 6), qos=1)
            await mqtt.publish(device_topic("gw-1", "health"), good, qos=1)
        await wait_for(lambda: stored(store) == 1, within=20, what="the good report")

        def counters() -> dict[str, int]:
            with store.transaction() as tx:
                return repo.rejects(tx)

        await wait_for(lambda: sum(counters().values()) == 5, within=20, what="5 rejects")
        assert counters() == {**{reason: 1 for reason in bad}, "unknown_device": 1}
        with store.transaction() as tx:
            rows = tx.execute(select(HealthReportRow.device_id, HealthReportRow.seq)).all()
        assert [tuple(r) for r in rows] == [("gw-1", 1)]  # nothing of gw-2, stranger, junk
        worker.stop()
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.kill()
    store.close()


# --- must-show 4: ticket -> self-test round trip -> RMA ---------------------------------


@pytest.fixture
async def cloud_app(clouds: FixtureBroker, tmp_path: Path) -> AsyncIterator[Any]:
    settings = CloudSettings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        broker_url=clouds.url("cloud-a"),
        command_timeout_s=60,
    )
    clock = FakeClock(int(time.time()))
    app = create_app(settings, accounts=clouds.accounts, clock=clock)
    async with running(app):
        async with client(app, new_api_key(app)) as http:
            await app.state.cloud.bridge.wait_connected(10)
            yield http, clock


async def scripted_device(
    clouds: FixtureBroker, device_id: str, password: str, answers: list[dict[str, Any]]
) -> None:
    """Answers each self_test with the next result of ``answers`` on its cmd/res."""
    async with clouds.client(device_id, password) as mqtt:
        await mqtt.subscribe(device_topic(device_id, "cmd"), qos=1)
        ready.set()
        async for message in mqtt.messages:
            command = parse_command(bytes(message.payload))  # type: ignore[arg-type]
            result = answers.pop(0)
            await mqtt.publish(
                device_topic(device_id, "cmd/res"),
                result_to_json(ok_result(command.id, device_id=device_id, result=result)),
                qos=1,
            )
            if not answers:
                return


ready = asyncio.Event()


async def self_test(http: Any, device_id: str) -> dict[str, Any]:
    sent = await http.post(f"/api/v1/devices/{device_id}/commands", json={"cmd": "self_test"})
    assert sent.status_code == 202, sent.text
    command = sent.json()
    assert command["status"] == "pending"
    deadline = time.monotonic() + HANG_S
    while True:
        got = (await http.get(f"/api/v1/devices/{device_id}/commands/{command['id']}")).json()
        if got["status"] != "pending":
            return dict(got)
        assert time.monotonic() < deadline, "no answer from the device"
        await asyncio.sleep(0.05)


async def test_ticket_self_test_round_trip_then_rma(cloud_app: Any, clouds: FixtureBroker) -> None:
    http, clock = cloud_app
    inst = (await http.post("/api/v1/installations", json={"name": "Shop"})).json()
    created = await http.post(
        "/api/v1/devices",
        json={"installation_id": inst["id"], "kind": "camera", "device_id": "cam-9"},
    )
    assert created.status_code == 201, created.text
    password = created.json()["mqtt_password"]
    ticket = await http.post(
        "/api/v1/tickets",
        json={
            "category": "device_fault",
            "subject": "camera reboots",
            "body": "it keeps rebooting",
            "installation_id": inst["id"],
            "device_ids": ["cam-9"],
        },
    )
    assert ticket.status_code == 201, ticket.text
    tid = ticket.json()["id"]

    refused = await http.post(f"/api/v1/tickets/{tid}/rma", json={"device_id": "cam-9"})
    assert refused.status_code == 409 and refused.json()["why"] == "no_self_test"

    passed = {"passed": True, "hardware_fault": False, "faults": []}
    fault = {
        "passed": False,
        "hardware_fault": True,
        "faults": [{"component": "sensor", "code": "E_SENSOR", "detail": "no frames"}],
    }
    ready.clear()
    device = asyncio.create_task(scripted_device(clouds, "cam-9", password, [passed, fault]))
    await asyncio.wait_for(ready.wait(), HANG_S)
    clock.advance(10)
    first = await self_test(http, "cam-9")
    assert first["status"] == "answered" and first["result"] == passed
    refused = await http.post(f"/api/v1/tickets/{tid}/rma", json={"device_id": "cam-9"})
    assert refused.status_code == 409 and refused.json()["why"] == "self_test_passed"

    clock.advance(10)
    second = await self_test(http, "cam-9")
    assert second["result"]["hardware_fault"] is True
    await asyncio.wait_for(device, HANG_S)
    approved = await http.post(f"/api/v1/tickets/{tid}/rma", json={"device_id": "cam-9"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved"] is True
    assert approved.json()["command_id"] == second["id"]
    health = (await http.get("/api/v1/devices/cam-9/health")).json()
    assert health["diagnosis"]["verdict"] == "rma_recommended"
    assert health["diagnosis"]["action"] == "replace_device"
    shown = (await http.get(f"/api/v1/tickets/{tid}")).json()
    assert shown["rma"][0]["command_id"] == second["id"]


async def test_the_job_runner_takes_no_share_of_the_health_stream(
    clouds: FixtureBroker, tmp_path: Path
) -> None:
    """``entitle cloud jobs`` (``ingest_health`` off) is connected and publishing, but not
    in the ``$share`` group: a worker beside it receives every report. Were the runner
    in the group, Mosquitto would hand it about every second one."""
    database_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    clouds.add_device("gw-1")
    store = prepare(database_url, ["gw-1"])
    settings = CloudSettings(
        data_dir=tmp_path / "jobs",
        database_url=database_url,
        broker_url=clouds.url("cloud-b"),
        ingest_health=False,
    )
    runner = create_app(settings, accounts=clouds.accounts)
    worker = Worker(clouds, "cloud-a", database_url, batch=5).start()
    try:
        async with running(runner):
            await runner.state.cloud.bridge.wait_connected(HANG_S)
            await publish_all(clouds, "gw-1", list(range(1, 41)))
            await wait_for(lambda: stored(store) == 40, within=60, what="every report")
            consuming = runner.state.cloud.bridge.receiver
        got = worker.stop()
    finally:
        if worker.process is not None and worker.process.poll() is None:
            worker.kill()
    assert got["stored"] == 40
    assert consuming is None
    store.close()
