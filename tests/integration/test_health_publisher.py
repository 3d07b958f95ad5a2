"""The agent's health publisher against a real Mosquitto: in seq order, kept during an outage.

Moved from tests/agent/test_health.py: it needs the broker, so it lives with the
other tests that run the agent against one (tests/agent runs with the agent alone).
"""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from agent.firmware import FirmwareClient, InProcessLink
from agent.outbox import Outbox
from agent.runtime import open_agent
from agent.session import Connection
from common.tasks import cancel_and_wait
from firmware_stubs import GatewayEmulator
from protocol.health import parse_health
from protocol.topics import device_topic
from simulators import TokenRepositorySimulator
from tests.waiting import eventually


def _persistent_subscriber(broker) -> aiomqtt.Client:
    """The cloud login with a session the broker keeps (and persists) while it is away."""
    return broker.client(
        broker.cloud_username, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False
    )


async def _collect(broker, topic: str, *, until, within: float = 30.0) -> list[dict]:
    got: list[dict] = []
    async with _persistent_subscriber(broker) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(within):
            async for message in client.messages:
                got.append(json.loads(bytes(message.payload)))
                if until(got):
                    return got
    return got


async def _until_acknowledged(outbox: Outbox, seqs: set[int]) -> None:
    """The PUBACK reaches the agent after the subscriber has its copy: poll for the delete."""
    await eventually(
        lambda: not seqs & {q.seq for q in outbox.pending(1000)},
        what=f"acknowledged reports {sorted(seqs)} deleted",
    )


async def test_publisher_delivers_in_seq_order_keeps_during_outage_and_delivers_after(
    tmp_path, broker
):
    device = "gw-health"
    password = broker.add_device(device)
    topic = device_topic(device, "health")
    async with _persistent_subscriber(broker) as client:  # create the kept session
        await client.subscribe(topic, qos=1)
    repo = TokenRepositorySimulator()
    agent = open_agent(
        device_id=device,
        data_dir=tmp_path / "agent",
        connection=Connection(
            host=broker.host, port=broker.port, username=device, password=password
        ),
        root_keyset=repo.root_keyset,
        firmware=FirmwareClient(InProcessLink(GatewayEmulator()), timeout_s=0.2),
        health_interval_s=0.05,
    )
    assert agent.health is not None and agent.publisher is not None
    outbox = agent.health.outbox
    task = asyncio.create_task(agent.run())
    try:
        first = await _collect(broker, topic, until=lambda got: len(got) >= 5)
        seqs = [r["seq"] for r in first]
        assert seqs == sorted(set(seqs)) and seqs[0] == 1
        for report in first:
            parse_health(json.dumps(report).encode(), topic_device_id=device)
        # acknowledged reports are gone from the outbox
        await _until_acknowledged(outbox, set(seqs))

        broker.stop()
        stopped_at = outbox.last_seq
        # reports pile up while the broker is away
        await eventually(lambda: len(outbox) >= 20, what="20 reports queued")
        queued = [q.seq for q in outbox.pending(1000)]
        assert queued == sorted(queued) and queued[-1] > stopped_at
        broker.start()

        target = queued[-1]
        after = await _collect(
            broker, topic, until=lambda got: target in {r["seq"] for r in got}, within=60
        )
        delivered = {r["seq"] for r in first} | {r["seq"] for r in after}
        # nothing lost: every seq up to the last one queued during the outage arrived
        assert set(range(1, target + 1)) <= delivered
        await _until_acknowledged(outbox, {target})
        assert agent.publisher.published >= target
        status = agent.status_details()
        assert status["outbox"]["last_seq"] >= target and status["outbox"]["dropped_total"] == 0
    finally:
        await cancel_and_wait([task])
        agent.close()
