"""A device that comes online holding an older token than its current one gets the current
one again: its status says which version it holds (``token_ver``), and the ingest republishes.

This closes the window where a token published while a device re-subscribes is missed (seen
on NATS when a node fails over: the device got the older retained token) until the next
publish, which could be days away.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from cloud.health.ingest import HealthIngest, Incoming
from protocol.topics import device_topic
from tests.cloud.conftest import Cloud
from tests.waiting import eventually

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _status(
    device_id: str,
    token_ver: object,
    acks: list[str],
    *,
    on_connect: bool = False,
    retained: bool = False,
) -> Incoming:
    details = {"token_ver": token_ver, **({"on_connect": True} if on_connect else {})}
    payload = json.dumps({"status": "online", **details}).encode()
    return Incoming(
        device_topic(device_id, "status"), payload, lambda: acks.append(device_id), retained
    )


def _sent(cloud: Cloud, device_id: str) -> list[bytes]:
    topic = device_topic(device_id, "entitlement")
    return [m.payload for m in cloud.publisher.log if m.topic == topic and m.payload]


async def _granted(cloud: Cloud) -> tuple[str, httpx.Response]:
    """A device of a new installation, and the answer to granting it remote_access."""
    installation = await cloud.installation()
    device = (await cloud.device(installation))["device_id"]
    granted = await cloud.http.post(
        f"/api/v1/installations/{installation}/grants",
        json={"feature": "remote_access", "until": cloud.clock() + 86400},
    )
    assert granted.status_code < 300, granted.text
    return device, granted


async def test_a_device_online_behind_gets_its_current_token_again(cloud: Cloud) -> None:
    device, granted = await _granted(cloud)
    current = _sent(cloud, device)[-1]
    before = len(_sent(cloud, device))
    ingest = cloud.state.health_ingest
    assert ingest is not None
    acks: list[str] = []

    ingest.offer(_status(device, 1, acks))  # holds version 1; its current one is newer
    await eventually(lambda: len(_sent(cloud, device)) == before + 1, what="a republish")
    assert _sent(cloud, device)[-1] == current  # the same token again, not a new version
    # counted once the publish returns, which is after the publisher has logged it
    await eventually(lambda: ingest.republished == 1, what="the republish counted")
    assert len(_sent(cloud, device)) == before + 1  # once
    health = (await cloud.http.get(f"/api/v1/devices/{device}/health")).json()
    assert health["reported_token_ver"] == 1  # the device page's "last reported applying"


@pytest.mark.parametrize("held", ["current", None, "2", 1.0])
async def test_a_device_up_to_date_or_not_saying_is_left_alone(cloud: Cloud, held: object) -> None:
    device, granted = await _granted(cloud)
    ingest = cloud.state.health_ingest
    assert ingest is not None
    [version] = [t["ver"] for t in granted.json()["tokens"] if t["device_id"] == device]
    before = len(_sent(cloud, device))
    acks: list[str] = []
    status = _status(device, version if held == "current" else held, acks)
    # the decision itself: the batch names no device behind
    assert (await asyncio.to_thread(ingest.commit, [status])).behind == []
    ingest.offer(status)
    await eventually(lambda: len(acks) == 1, what="the status acked")
    # a second message, offered only now: the consumer takes it after the first batch's
    # catch-up (acks come before it), so once this one is acked any republish is done
    ingest.offer(_status(device, version, acks))
    await eventually(lambda: len(acks) == 2, what="the second status acked")
    assert len(_sent(cloud, device)) == before
    assert ingest.republished == 0


async def test_a_republish_the_broker_did_not_take_is_left_to_the_refresh_job(
    cloud: Cloud,
) -> None:
    """The cloud's own connection may still be failing over when a device comes back
    online behind (a NATS node died under both): the token goes back into the outbox."""
    device, granted = await _granted(cloud)
    [version] = [t["ver"] for t in granted.json()["tokens"] if t["device_id"] == device]
    current = _sent(cloud, device)[-1]
    before = len(_sent(cloud, device))
    service = cloud.state.service
    assert service.resign_counters().outbox == 0
    ingest = cloud.state.health_ingest
    assert ingest is not None
    acks: list[str] = []
    cloud.publisher.down = True
    ingest.offer(_status(device, 1, acks))  # behind, and the broker is away
    await eventually(lambda: len(acks) == 1, what="the status acked")
    ingest.offer(_status(device, version, acks))  # taken after the first batch's catch-up
    await eventually(lambda: len(acks) == 2, what="the second status acked")
    assert ingest.republished == 0  # not counted: nothing was published
    assert service.resign_counters().outbox == 1  # left to the refresh job

    cloud.publisher.down = False
    published = await service.publish_outbox(before=cloud.clock())
    assert [i.device_id for i in published if i.published] == [device]
    assert _sent(cloud, device)[-1] == current and len(_sent(cloud, device)) == before + 1
    assert service.resign_counters().outbox == 0


async def test_a_database_failure_at_the_catch_up_does_not_end_the_ingest(cloud: Cloud) -> None:
    # the catch-up reads the tokens and may put them back in the outbox: an error there
    # is logged, and the next message is ingested (it ended the ingest's task before)
    from sqlalchemy.exc import OperationalError

    device, granted = await _granted(cloud)
    ingest = cloud.state.health_ingest
    assert ingest is not None and ingest.on_behind is not None
    republish, failed = ingest.on_behind, asyncio.Event()

    async def database_down(devices: list[str]) -> list:
        failed.set()
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    ingest.on_behind = database_down
    acks: list[str] = []
    ingest.offer(_status(device, 1, acks))
    await asyncio.wait_for(failed.wait(), 30)  # a hang guard, not a figure
    ingest.on_behind = republish
    before = len(_sent(cloud, device))
    ingest.offer(_status(device, 1, acks))  # still behind: this one is republished
    await eventually(lambda: len(_sent(cloud, device)) == before + 1, what="a republish")


@pytest.mark.parametrize(
    ("engine", "on_connect", "retained", "resent"),
    [
        ("nats", True, False, True),  # the first status of a connection, as published
        ("nats", True, True, False),  # its retained copy, replayed to a worker subscribing
        ("nats", False, False, False),  # a status after the decisions changed
        ("mosquitto", True, False, False),  # Mosquitto replays the retained token itself
    ],
)
async def test_on_nats_a_device_that_connects_holding_its_current_token_gets_it_again(
    cloud: Cloud, engine: str, on_connect: bool, retained: bool, resent: bool
) -> None:
    """A NATS node that failed and came back may replay no retained token to a device
    re-subscribing on it (seen in the reconnect storm): that device holds its current
    token, so it is not behind, yet it would wait for a token that never comes. On NATS
    the ingest resends the current token to a device whose status is the first of a
    new connection, as the device published it."""
    device, granted = await _granted(cloud)
    [version] = [t["ver"] for t in granted.json()["tokens"] if t["device_id"] == device]
    ingest = HealthIngest(cloud.state.store, clock=cloud.clock, resend_on_connect=engine == "nats")
    status = _status(device, version, [], on_connect=on_connect, retained=retained)
    report = await asyncio.to_thread(ingest.commit, [status])
    assert report.behind == ([device] if resent else [])
