"""The gap-repair job against SQLite and PostgreSQL: two workers ask once, answers are kept.

Reports are stored through the real batch handler (``HealthIngest.process``);
commands go to a recording publisher (no broker here: the round trip over
Mosquitto is tests/integration/test_health_ingest.py's broker-restart test).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from cloud.database import Store
from cloud.devices import queries as device_queries
from cloud.devices.rules import DeviceKind
from cloud.health.commands import CommandService
from cloud.health.gaps import HealthGapJob
from cloud.health.ingest import HealthIngest, Incoming
from cloud.health.tables import HealthUnrecoverableRow
from protocol.commands import ok_result, result_to_json
from protocol.health import HealthReport, health_to_json
from protocol.topics import device_topic

T0 = 1_767_225_600
GRACE, BACKOFF = 10, 300


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class RecordingPublisher:
    """Stands in for the MQTT bridge: keeps what would be published on ``cmd``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def publish_command(self, device_id: str, payload: bytes) -> None:
        self.sent.append((device_id, json.loads(payload)))


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[Store, Store]]:
    """Two workers: two engines on one database."""
    first, second = Store.open(database_url), Store.open(database_url)
    with first.transaction() as tx:
        device_queries.add_installation(tx, installation_id="inst-1", name="Shop", now=T0)
        device_queries.add_device(
            tx,
            device_id="gw-1",
            installation_id="inst-1",
            kind=DeviceKind.GATEWAY,
            password_hash="x",
            now=T0,
        )
    yield first, second
    first.close()
    second.close()


def _report(seq: int) -> Incoming:
    data = health_to_json(
        HealthReport(device_id="gw-1", seq=seq, ts=T0 + seq, kind="gateway", uptime_s=seq)
    )
    return Incoming(device_topic("gw-1", "health"), data)


def _worker(store: Store, clock: Clock, publisher: RecordingPublisher) -> HealthGapJob:
    commands = CommandService(store, publisher, clock=clock, timeout_s=300)
    return HealthGapJob(store, commands, clock=clock, grace_s=GRACE, backoff_s=BACKOFF)


async def test_two_workers_ask_once_and_a_not_held_answer_is_never_asked_again(
    stores: tuple[Store, Store],
) -> None:
    first, second = stores
    clock = Clock()
    ingest = HealthIngest(first, clock=clock)
    ingest.process([_report(seq) for seq in (1, 2, 3, 7, 8)])  # 4..6 lost on the way
    published = RecordingPublisher()
    workers = [_worker(first, clock, published), _worker(second, clock, published)]

    assert [await w.run_once() for w in workers][0].asked == ()  # within the grace: in flight
    clock.now += GRACE + 1
    passes = await asyncio.gather(*(w.run_once() for w in workers))
    assert sorted(a for p in passes for a in p.asked) == [("gw-1", 4, 6)]  # one ask, not two
    [(device, command)] = published.sent
    assert device == "gw-1" and command["cmd"] == "resend_health"
    assert command["args"] == {"from_seq": 4, "to_seq": 6}

    clock.now += BACKOFF - 1  # within the back-off nobody asks again
    assert all(p.asked == () for p in await asyncio.gather(*(w.run_once() for w in workers)))

    # the device still held 5 and 6 (re-sent and stored), 4 had been pruned
    answer = ok_result(
        command["id"], device_id="gw-1", result={"requeued": 2, "queued": 0, "not_held": [[4, 4]]}
    )
    ingest.process([Incoming(device_topic("gw-1", "cmd/res"), result_to_json(answer))])
    ingest.process([_report(5), _report(6)])
    clock.now += BACKOFF
    passes = await asyncio.gather(*(w.run_once() for w in workers))
    assert sum(p.unrecoverable for p in passes) == 1 and all(p.asked == () for p in passes)
    with first.transaction() as tx:
        kept = tx.execute(
            select(HealthUnrecoverableRow.from_seq, HealthUnrecoverableRow.to_seq)
        ).all()
    assert [tuple(row) for row in kept] == [(4, 4)]
    clock.now += BACKOFF * 2
    assert all(p.asked == () for p in await asyncio.gather(*(w.run_once() for w in workers)))
    assert len(published.sent) == 1


async def test_between_sweeps_new_holes_are_found_and_unfilled_asks_asked_again(
    stores: tuple[Store, Store],
) -> None:
    """Only a worker's first pass sweeps the window here; the rest look at new arrivals
    (a report whose predecessor is missing) and at asks not yet filled."""
    store, _ = stores
    clock = Clock()
    ingest = HealthIngest(store, clock=clock)
    published = RecordingPublisher()
    commands = CommandService(store, published, clock=clock, timeout_s=300)
    job = HealthGapJob(
        store, commands, clock=clock, grace_s=GRACE, backoff_s=BACKOFF, sweep_s=10**9
    )
    ingest.process([_report(seq) for seq in (1, 2, 3)])
    assert (await job.run_once()).asked == ()  # the sweep: nothing missing

    clock.now += 30
    ingest.process([_report(seq) for seq in (4, 5, 9)])  # 6..8 lost, after the sweep
    clock.now += GRACE + 1
    assert (await job.run_once()).asked == (("gw-1", 6, 8),)

    # the device never answers, and its reports stop: long after the arrival, the unfilled
    # ask alone brings the device back, and it is asked again once the back-off is over
    clock.now += BACKOFF - 1
    assert (await job.run_once()).asked == ()
    clock.now += 2
    assert (await job.run_once()).asked == (("gw-1", 6, 8),)

    # filled: nothing is asked again
    ingest.process([_report(seq) for seq in (6, 7, 8)])
    clock.now += BACKOFF + 1
    assert (await job.run_once()).asked == ()
    assert [c["args"] for _, c in published.sent] == [{"from_seq": 6, "to_seq": 8}] * 2
