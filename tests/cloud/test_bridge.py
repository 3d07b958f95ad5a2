"""The MQTT bridge against a real Mosquitto: retained tokens, expiry, reconnects."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from cloud.bridge import MqttBridge
from cloud.settings import CloudSettings
from common.mqtt import backoff_delay
from protocol.errors import TransportError
from protocol.topics import KEYS_TOPIC, device_topic
from tests.broker_fixtures import FixtureBroker
from tests.waiting import HANG_S, eventually


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(2.0, 0.1 * 2**attempt)
        delay = backoff_delay(attempt, base_s=0.1, cap_s=2.0, rng=rng)
        assert ceiling / 2 <= delay <= ceiling
    assert len({backoff_delay(3, rng=rng) for _ in range(20)}) > 1


def _bridge(broker: FixtureBroker, tmp_path: Path, *, protocol: int = 5) -> MqttBridge:
    settings = CloudSettings(
        data_dir=tmp_path, broker_url=broker.url("cloud"), mqtt_protocol=protocol
    )
    return MqttBridge(
        settings.broker,
        keyset_message=lambda: b"keyset-message",
        protocol=protocol,
        publish_timeout_s=0.5,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )


@asynccontextmanager
async def _running(bridge: MqttBridge) -> AsyncIterator[None]:
    task = asyncio.create_task(bridge.run(), name="bridge")
    try:
        await bridge.wait_connected(HANG_S)
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _retained(broker: FixtureBroker, device_id: str, n: int) -> dict[str, aiomqtt.Message]:
    """The retained messages a device sees on connect (waits for ``n`` of them)."""
    got: dict[str, aiomqtt.Message] = {}
    async with broker.client(device_id) as client:
        await client.subscribe(device_topic(device_id, "entitlement"), qos=1)
        await client.subscribe(KEYS_TOPIC, qos=1)
        try:
            async with asyncio.timeout(0.5 if n == 0 else HANG_S):
                async for message in client.messages:
                    got[str(message.topic)] = message
                    if len(got) == n:
                        break
        except TimeoutError:
            if n:
                raise
    return got


@pytest.mark.parametrize("protocol", [5, 4])
async def test_tokens_and_keyset_are_retained(
    broker: FixtureBroker, tmp_path: Path, protocol: int
) -> None:
    broker.add_device("gw-1")
    bridge = _bridge(broker, tmp_path, protocol=protocol)
    async with _running(bridge):
        assert bridge.connected
        await bridge.publish_entitlement("gw-1", b"token-v1", expiry_s=120)
        got = await _retained(broker, "gw-1", 2)
        token = got[device_topic("gw-1", "entitlement")]
        assert token.payload == b"token-v1" and token.retain and token.qos == 1
        assert got[KEYS_TOPIC].payload == b"keyset-message"
        expiry = getattr(token.properties, "MessageExpiryInterval", None)
        if protocol == 5:
            assert expiry is not None and 110 <= expiry <= 120
        else:
            assert expiry is None

        await bridge.clear_entitlement("gw-1")
        got = await _retained(broker, "gw-1", 1)
        assert list(got) == [KEYS_TOPIC]


async def test_publish_while_down_raises_then_reconnects(
    broker: FixtureBroker, tmp_path: Path
) -> None:
    broker.add_device("gw-2")
    bridge = _bridge(broker, tmp_path)
    async with _running(bridge):
        broker.stop()
        await eventually(lambda: not bridge.connected, what="the bridge noticed the broker gone")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportError, match="not connected"):
            await bridge.publish_entitlement("gw-2", b"lost", expiry_s=60)
        assert 0.4 < loop.time() - started < 2  # waited for the publish timeout, no longer
        broker.start()
        await bridge.wait_connected(HANG_S)
        await bridge.publish_entitlement("gw-2", b"after-restart", expiry_s=60)
        got = await _retained(broker, "gw-2", 2)
        assert got[device_topic("gw-2", "entitlement")].payload == b"after-restart"
