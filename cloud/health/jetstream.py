"""The health stream on NATS: one replicated JetStream stream, one durable consumer for all workers.

NATS's MQTT listener speaks MQTT 3.1.1 and has no ``$share``: subscribed over
MQTT, every worker would receive every report. Instead a device's QoS 1
PUBLISH on ``entitle/v1/dev/{id}/health`` (NATS subject
``entitle.v1.dev.{id}.health``) is captured by the JetStream stream
:data:`STREAM` (work-queue retention, file storage, replicated on up to three
nodes); every worker pulls batches from the one durable pull consumer
:data:`DURABLE`, so each report goes to one worker at a time. A worker acks a
message only after its batch committed (:class:`common.mqtt.Received`'s
``ack``, as on Mosquitto); one that dies (kill -9) never acks, and JetStream
hands the message to whichever worker pulls after ``ack_wait_s``; the unique
``(device_id, seq)`` makes a second copy a no-op. At most ``max_unacked``
messages are held unacked by one worker (the analogue of MQTT's Receive
Maximum), so a busy worker leaves the rest of the stream to the others.

The stream is the broker's: its auth responders make it when the cluster starts
(:mod:`common.natsstreams`), so reports sent before any worker ran are kept;
a worker ensures it again when it connects (a cluster run without our
responders), idempotently. Each worker creates or updates the consumer when it
connects (NATS updates an existing durable's editable fields, such as its ack
wait): ``ENTITLE_HEALTH_ACK_WAIT_S`` set on the workers takes effect when
they restart. Errors of nats-py stay here: the loop logs and
reconnects with :func:`common.mqtt.backoff_delay`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from cloud.settings import CloudSettings
from common.mqtt import Received, backoff_delay
from common.natsstreams import HEALTH_STREAM, HEALTH_SUBJECT, ensure_health_stream

__all__ = ["DURABLE", "STREAM", "SUBJECT", "JetStreamHealth"]

_log = logging.getLogger(__name__)

STREAM = HEALTH_STREAM
DURABLE = "cloud-health"
SUBJECT = HEALTH_SUBJECT


def _topic(subject: str) -> str:
    # device ids hold no "." (protocol.topics), so NATS's "/" -> "." mapping reverses plainly
    return subject.replace(".", "/")


class JetStreamHealth:
    """Pulls health reports from :data:`DURABLE` and hands them over in batches."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        username: str | None,
        password: str | None,
        batch: int = 500,
        max_unacked: int = 1000,
        ack_wait_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.servers = list(servers)
        self._username = username
        self._password = password
        self._batch = batch
        self._max_unacked = max_unacked
        self._ack_wait_s = ack_wait_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._acks: list[Msg] = []
        self._acked = asyncio.Event()  # acks queued: the ack task wakes
        self._room = asyncio.Event()  # fewer than max_unacked held: the fetch task goes on
        self._unacked = 0
        self._generation = 0  # one per connection: an ack from an older one is dropped
        self.connected = asyncio.Event()
        self.received = 0
        self.replicas = min(3, max(1, len(self.servers)))

    @classmethod
    def from_settings(cls, settings: CloudSettings) -> JetStreamHealth:
        """On ``settings.nats_servers`` with the broker URL's login."""
        broker = settings.broker
        return cls(
            settings.nats_servers,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password else None,
            batch=settings.health_batch_size,
            ack_wait_s=settings.health_ack_wait_s,
        )

    def _ack_later(self, message: Msg) -> Callable[[], None]:
        generation = self._generation

        def ack() -> None:
            # on a later connection JetStream redelivers it instead (after ack_wait)
            if generation == self._generation:
                self._acks.append(message)
                self._acked.set()

        return ack

    async def _setup(self, nc: nats.NATS) -> object:
        js = nc.jetstream()
        if await ensure_health_stream(js, replicas=self.replicas):
            _log.info("created the JetStream stream %s (%d replicas)", STREAM, self.replicas)
        # create or update: a durable made with another ack wait takes this worker's
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                name=DURABLE,
                durable_name=DURABLE,
                filter_subject=SUBJECT,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait_s,
                max_ack_pending=-1,
            ),
        )
        return await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)

    async def _send_acks(self) -> None:
        while True:
            await self._acked.wait()
            self._acked.clear()
            acks, self._acks = self._acks, []
            for message in acks:
                await message.ack()
            self._unacked = max(0, self._unacked - len(acks))
            if self._unacked < self._max_unacked:
                self._room.set()

    async def _fetch(self, subscription: object, deliver: Callable[[list[Received]], None]) -> None:
        while True:
            if self._unacked >= self._max_unacked:
                self._room.clear()
                await self._room.wait()
            want = min(self._batch, self._max_unacked - self._unacked)
            try:
                messages = await subscription.fetch(want, timeout=1.0)  # type: ignore[attr-defined]
            except TimeoutError:  # nats-py raises its own or asyncio's: nothing came this second
                continue
            if messages:
                self._unacked += len(messages)
                self.received += len(messages)
                deliver([Received(_topic(m.subject), m.data, self._ack_later(m)) for m in messages])

    async def run(self, deliver: Callable[[list[Received]], None]) -> None:
        """Pull until cancelled, reconnecting with backoff; ``deliver`` gets each batch."""
        attempt = 0
        while True:
            nc: nats.NATS | None = None
            delay: float | None = None
            try:
                nc = await nats.connect(
                    servers=self.servers,
                    user=self._username,
                    password=self._password,
                    connect_timeout=5,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    name=f"{self._username} health",
                )
                subscription = await self._setup(nc)
                # what was delivered on an earlier connection and not acked comes back after
                # ack_wait: start counting afresh
                self._generation += 1
                self._acks, self._unacked = [], 0
                self._room.set()
                self.connected.set()
                attempt = 0
                _log.info("pulling %s from JetStream consumer %s", SUBJECT, DURABLE)
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._send_acks(), name="jetstream-acks")
                    tasks.create_task(self._fetch(subscription, deliver), name="jetstream-fetch")
            except* (nats.errors.Error, OSError, TimeoutError) as group:
                delay = backoff_delay(attempt, base_s=self._backoff[0], cap_s=self._backoff[1])
                attempt += 1
                _log.warning(
                    "JetStream health consumer at %s: %s; retrying in %.1fs",
                    ",".join(self.servers),
                    repr(group.exceptions[0]),
                    delay,
                )
            finally:
                self.connected.clear()
                if nc is not None and not nc.is_closed:
                    # bounded: a shutdown must not wait on a cluster that went away
                    with contextlib.suppress(TimeoutError, nats.errors.Error):
                        await asyncio.wait_for(nc.close(), 5.0)
            if delay is not None:
                # not inside ``except*``: a cancel raised there comes out wrapped in an
                # exception group, which the app's task groups do not take as a cancel
                # (the app's shutdown failed so while the consumer waited to reconnect)
                await asyncio.sleep(delay)
