"""A device waits for a late SUBACK instead of giving up on the connection.

A NATS node creates a JetStream consumer for each QoS 1 subscription; when a
burst of devices reconnects it answers SUBSCRIBE late. A device that gave up
after the client's 10 s reconnected elsewhere and made the node's work grow
(docs/nats.md). No real broker can be told to hold a SUBACK, so the broker
here is a test double: a minimal MQTT 3.1.1 server on loopback that answers
CONNECT, PUBLISH (QoS 1) and PINGREQ at once and every SUBSCRIBE only after
a hold longer than the session's other timeouts (or never).
"""

from __future__ import annotations

import asyncio
import math
import random

from agent.session import Connection, MqttSession
from tests.waiting import eventually

HOLD_S = 1.0
TIMEOUT_S = 0.5  # the session's connect and publish timeout: shorter than the hold


class HeldSubacks:
    """The test double broker: every SUBACK sent ``hold_s`` after its SUBSCRIBE."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.connects = 0
        self.subscribes = 0
        self.subacks = 0  # sent, each after the hold
        self.statuses = 0  # QoS 1 PUBLISHes acknowledged

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = header >> 4
                if kind == 1:  # CONNECT
                    self.connects += 1
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE: packet id, then (topic, qos) pairs
                    filters, at = 0, 2
                    while at < len(body):
                        at += 2 + int.from_bytes(body[at : at + 2], "big") + 1
                        filters += 1
                    self.subscribes += 1
                    await asyncio.sleep(self.hold_s if self.hold_s < math.inf else 3600)
                    writer.write(bytes([0x90, 2 + filters]) + body[:2] + b"\x01" * filters)
                    self.subacks += 1
                elif kind == 3:  # PUBLISH (the device's status, QoS 1): PUBACK its id
                    topic_end = 2 + int.from_bytes(body[:2], "big")
                    self.statuses += 1
                    writer.write(b"\x40\x02" + body[topic_end : topic_end + 2])
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _connect(
    broker: HeldSubacks, subscribe_timeout_s: float
) -> tuple[asyncio.Server, MqttSession, asyncio.Task[None]]:
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = MqttSession(
        Connection("127.0.0.1", port, "gw-held", password="x", protocol=4),
        lambda _topic, _payload: asyncio.sleep(0),
        backoff_base=0.05,
        backoff_cap=0.2,
        rng=random.Random(1),
        timeout_s=TIMEOUT_S,
        subscribe_timeout_s=subscribe_timeout_s,
    )
    return server, session, asyncio.create_task(session.run())


async def _stop(server: asyncio.Server, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    server.close()


async def test_a_device_waits_for_a_late_suback_on_the_same_connection() -> None:
    broker = HeldSubacks(hold_s=HOLD_S)
    server, session, task = await _connect(broker, subscribe_timeout_s=30.0)
    try:
        # it connects ~HOLD_S after the SUBSCRIBE; its on-connect status follows
        await eventually(lambda: broker.statuses > 0, what="the device's status after its SUBACK")
        # one SUBSCRIBE, answered after the hold, and its connection went on
        assert (broker.subscribes, broker.subacks, session.connects) == (1, 1, 1)
    finally:
        await _stop(server, task)


async def test_a_suback_later_than_the_subscribe_timeout_ends_the_connection() -> None:
    """The counter-case: the subscribe timeout, not the hold, decides when it gives up."""
    broker = HeldSubacks(hold_s=math.inf)
    server, session, task = await _connect(broker, subscribe_timeout_s=TIMEOUT_S)
    try:
        # each connection subscribes, waits TIMEOUT_S, gives up and connects again
        await eventually(lambda: broker.subscribes >= 3, what="three SUBSCRIBEs given up on")
        assert session.connects == 0  # never subscribed, so never connected
    finally:
        await _stop(server, task)
