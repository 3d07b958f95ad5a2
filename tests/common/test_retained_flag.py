"""A message as published is told apart from a retained copy replayed on subscribing.

The cloud resends the current token to a device whose status is the first of a new
connection (on NATS, where a node may replay no retained token after a failure), but
only for a status as the device published it: the retained copies every status topic
replays when a cloud worker itself (re)subscribes must not resend to the whole fleet.
:class:`common.mqtt.BatchReceiver` marks them (``Received.retained``); checked here
on each engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from common.mqtt import BatchReceiver, Endpoint, PersistentSession, Received
from protocol.topics import device_topic
from tests.broker_fixtures import (  # noqa: F401  (fixtures)
    FixtureBroker,
    engine_broker,
    nats_cluster,
    shared_broker,
)
from tests.waiting import HANG_S

_log = logging.getLogger("test.retained_flag")


async def _first(broker: FixtureBroker, topic: str, identifier: str, *, publish: bool) -> Received:
    """Subscribe to ``topic`` as the cloud (its own session ``identifier``); with
    ``publish``, the device publishes its status (retained) once subscribed. The first
    message received."""
    device = topic.split("/")[3]
    receiver = BatchReceiver(
        Endpoint(
            "127.0.0.1",
            broker.port,
            username=broker.cloud_username,
            password=broker.cloud_password,
            identifier=identifier,
            protocol=broker.mqtt_protocol,
        ),
        subscriptions=[topic],
        session=PersistentSession(),
        log=_log,
    )
    got: asyncio.Queue[Received] = asyncio.Queue()

    def deliver(batch: list[Received]) -> None:
        for message in batch:
            message.ack()
            got.put_nowait(message)

    task = asyncio.create_task(receiver.run(deliver))
    try:
        async with asyncio.timeout(HANG_S):
            await receiver.connected.wait()
            if publish:
                async with broker.client(device) as mqtt:
                    await mqtt.publish(topic, b'{"status": "online"}', qos=1, retain=True)
            return await got.get()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_status_as_published_is_not_retained_and_its_replay_is(
    engine_broker: FixtureBroker,  # noqa: F811
) -> None:
    device, _ = engine_broker.new_device("retflag")
    topic = device_topic(device, "status")
    live = await _first(
        engine_broker, topic, f"{engine_broker.cloud_username}-{device}-a", publish=True
    )
    assert live.payload == b'{"status": "online"}' and live.retained is False
    replayed = await _first(
        engine_broker, topic, f"{engine_broker.cloud_username}-{device}-b", publish=False
    )
    assert replayed.payload == live.payload and replayed.retained is True
