"""A subscription the broker refuses ends the connection, which is then retried.

Issue 16: after the NATS node under a device was killed, the device re-subscribed on
another node while the JetStream stream behind QoS 1 subscriptions re-elected its
leader; the node answered SUBACK 0x80 for the entitlement filter (it could not make
the subscription's consumer in time), the agent went on without it, said it was
online, and never received the token the cloud republished to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import Endpoint, Link, LinkError, MqttClient, refused_subscriptions
from protocol.topics import device_topic
from tests.broker_fixtures import (  # noqa: F401  (fixtures)
    FixtureBroker,
    engine_broker,
    nats_cluster,
    shared_broker,
)
from tests.waiting import HANG_S

_log = logging.getLogger("test.refused_subscription")


def _code(value: int) -> ReasonCode:
    return ReasonCode(PacketTypes.SUBACK, identifier=value)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("codes", "refused"),
    [
        ([_code(1), _code(1)], []),
        ([_code(0), _code(1)], []),  # granted at a lower QoS is granted
        ([_code(1), _code(0x80)], ["b"]),  # MQTT 3.1.1 failure (NATS)
        ([_code(0x87), _code(1)], ["a"]),  # MQTT 5 not authorized (Mosquitto)
        ([1, 128], ["b"]),  # bare numbers
        ([_code(1)], ["b"]),  # no code for a filter: not granted
    ],
)
def test_the_filters_a_suback_refused(codes: list[object], refused: list[str]) -> None:
    assert refused_subscriptions(["a", "b"], codes) == refused


async def test_a_refused_subscription_is_a_link_error_and_never_connected(
    engine_broker: FixtureBroker,  # noqa: F811
) -> None:
    """On each engine: a device asks for its own topic and another device's."""
    user, password = engine_broker.new_device("subref")
    other, _ = engine_broker.new_device("subref")
    client = MqttClient(
        Endpoint(
            "127.0.0.1",
            engine_broker.port,
            username=user,
            password=password,
            identifier=user,
            protocol=engine_broker.mqtt_protocol,
        ),
        log=_log,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    outcome: asyncio.Future[LinkError | None] = asyncio.get_running_loop().create_future()

    async def subscribe(link: Link) -> None:
        try:
            await link.subscribe(device_topic(user, "cmd"), device_topic(other, "cmd"))
        except LinkError as exc:
            if not outcome.done():
                outcome.set_result(exc)
            raise
        if not outcome.done():
            outcome.set_result(None)

    async def idle(link: Link) -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(
        client.run(on_connect=subscribe, consume=idle, connected_message="up")
    )
    try:
        async with asyncio.timeout(HANG_S):
            error = await outcome
        assert error is not None, "the refused subscription was taken as granted"
        assert device_topic(other, "cmd") in str(error)
        assert device_topic(user, "cmd") not in str(error)
        assert client.connects == 0 and not client.connected.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
