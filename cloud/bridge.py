"""The cloud's MQTT identity: publishes tokens and key sets retained, QoS 1.

One long-lived connection on the project's MQTT client
(:class:`common.mqtt.MqttClient`: reconnects with capped exponential backoff and
jitter). On every connect it first retains the key-set message on
``entitle/v1/keys``. With MQTT 5 each token carries a Message Expiry Interval
equal to its remaining lifetime, so the broker stops serving it once it lapsed;
MQTT 3.1.1 (``mqtt_protocol = 4``) has no properties and relies on ``exp`` alone.
A publish made while disconnected waits up to ``publish_timeout_s`` for the
connection, then raises :class:`protocol.errors.TransportError`.

With a :class:`MessageConsumer` (the health ingest) a second connection
(:class:`common.mqtt.BatchReceiver`: paho's network loop in a thread, ~48 µs of
CPU a message where the publishing connection's aiomqtt costs ~165 µs)
subscribes to the consumer's topics, on a persistent session
(:class:`common.mqtt.PersistentSession`: clean start off, a session expiry, a
Receive Maximum) with manual acknowledgement: messages are handed over in
batches, each with an ``ack`` that sends the PUBACK only when the consumer calls
it, after its batch committed, and only on the connection that received it
(after a reconnect the broker redelivers whatever was not acked). That
connection's client id is ``identifier`` (default: the login), so a restarted
worker gets its own session back; N workers on one login each need their own
(``entitle cloud serve --workers N`` names them ``<login>-1`` ... ``<login>-N``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from cloud.settings import CloudSettings
from common.mqtt import (
    BatchReceiver,
    Endpoint,
    Link,
    LinkError,
    MqttClient,
    PersistentSession,
    Received,
)
from common.settings import BrokerAddress
from protocol.topics import KEYS_TOPIC, device_topic

__all__ = ["MessageConsumer", "MqttBridge"]

_log = logging.getLogger(__name__)


class MessageConsumer(Protocol):
    """Receives the messages of ``subscriptions`` and acks each once it is safe."""

    @property
    def subscriptions(self) -> Sequence[str]: ...

    def offer(self, message: Received) -> None: ...

    def offer_batch(self, messages: list[Received]) -> None: ...


class StreamSource(Protocol):
    """Messages the consumer gets from elsewhere than MQTT (JetStream on NATS)."""

    connected: asyncio.Event

    async def run(self, deliver: Callable[[list[Received]], None]) -> None: ...


class MqttBridge:
    """An :class:`~cloud.ports.EntitlementPublisher` over a real broker."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        keyset_message: Callable[[], bytes],
        protocol: int = 5,
        tls_context: ssl.SSLContext | None = None,
        identifier: str | None = None,
        publish_timeout_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        consumer: MessageConsumer | None = None,
        session_expiry_s: int = 7 * 86_400,
        receive_maximum: int = 1000,
    ) -> None:
        self._keyset_message = keyset_message
        self._protocol = protocol
        self._publish_timeout_s = publish_timeout_s
        self._endpoint = Endpoint(
            broker.host,
            broker.port,
            username=broker.username,
            password=broker.password.get_secret_value() if broker.password else None,
            identifier=identifier,
            protocol=protocol,
            tls_context=tls_context,
            fallbacks=broker.fallbacks,
        )
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._receiver: BatchReceiver | None = None
        self._stream: StreamSource | None = None
        self._client = MqttClient(
            replace(self._endpoint, identifier=None),  # the consumer's id is the session's
            log=_log,
            timeout_s=publish_timeout_s,
            backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s,
        )
        self._session = PersistentSession(
            expiry_s=session_expiry_s, receive_maximum=receive_maximum
        )
        self._consumer: MessageConsumer | None = None
        if consumer is not None:
            self.attach(consumer)

    def attach(self, consumer: MessageConsumer, *, stream: StreamSource | None = None) -> None:
        """Consume ``consumer.subscriptions`` (on its own connection, from :meth:`run` on),
        and ``stream``'s messages when given (cloud.health.jetstream on NATS)."""
        self._consumer = consumer
        self._stream = stream
        self._receiver = BatchReceiver(
            replace(
                self._endpoint, identifier=self._endpoint.identifier or self._endpoint.username
            ),
            subscriptions=[self._filter(t) for t in consumer.subscriptions],
            session=self._session,
            log=_log,
            backoff_base_s=self._backoff[0],
            backoff_cap_s=self._backoff[1],
        )

    @property
    def receiver(self) -> BatchReceiver | None:
        """The consuming connection (None without a consumer): its figures for /metrics."""
        return self._receiver

    @classmethod
    def from_settings(
        cls, settings: CloudSettings, *, keyset_message: Callable[[], bytes]
    ) -> MqttBridge:
        return cls(
            settings.broker,
            keyset_message=keyset_message,
            protocol=settings.mqtt_protocol,
            tls_context=settings.broker_tls_context(),
            identifier=settings.mqtt_client_id,
        )

    @property
    def connected(self) -> bool:
        """Connected to publish, and (with a consumer) subscribed to receive."""
        receiving = self._receiver is None or self._receiver.connected.is_set()
        streaming = self._stream is None or self._stream.connected.is_set()
        return self._client.connected.is_set() and receiving and streaming

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once connected (the key set retained, the consumer subscribed);
        TransportError on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self._client.wait_connected(timeout_s)
        for source in (self._receiver, self._stream):
            if source is None:
                continue
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await source.connected.wait()
            except TimeoutError:
                raise LinkError(
                    f"not subscribed at the broker at {self._endpoint.where} within {timeout_s:g}s"
                ) from None

    def _filter(self, topic: str) -> str:
        # MQTT 3.1.1 is what the embedded amqtt broker speaks, and it has no shared
        # subscriptions: subscribe plainly. Several workers then each get every
        # message; (device_id, seq) dedupe still stores each report once.
        if self._protocol == 4 and topic.startswith("$share/"):
            return topic.split("/", 2)[2]
        return topic

    async def _on_connect(self, link: Link) -> None:
        await link.publish(
            KEYS_TOPIC, self._keyset_message(), retain=True, timeout_s=self._publish_timeout_s
        )

    async def _consume(self, link: Link) -> None:
        # Nothing is subscribed here: the iterator ends only by raising on disconnect.
        async for _message in link.messages():
            pass

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff."""
        async with asyncio.TaskGroup() as tasks:
            if self._receiver is not None and self._consumer is not None:
                tasks.create_task(
                    self._receiver.run(self._consumer.offer_batch), name="mqtt-receiver"
                )
            if self._stream is not None and self._consumer is not None:
                tasks.create_task(self._stream.run(self._consumer.offer_batch), name="stream")
            await self._client.run(
                on_connect=self._on_connect,
                consume=self._consume,
                connected_message=(
                    f"connected to the broker at {self._client.endpoint.where}; key set retained"
                ),
            )

    async def _publish(
        self, topic: str, payload: bytes, *, expiry_s: int | None = None, retain: bool = True
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_s
        link = await self._client.wait_connected(self._publish_timeout_s)
        await link.publish(
            topic,
            payload,
            retain=retain,
            expiry_s=expiry_s,
            timeout_s=max(0.1, deadline - loop.time()),
        )

    async def publish_entitlement(self, device_id: str, token: bytes, *, expiry_s: int) -> None:
        await self._publish(device_topic(device_id, "entitlement"), token, expiry_s=expiry_s)

    async def publish_keyset(self, data: bytes) -> None:
        await self._publish(KEYS_TOPIC, data)

    async def publish_command(self, device_id: str, payload: bytes) -> None:
        """A command, QoS 1 and not retained: a reboot must not rerun on every reconnect."""
        await self._publish(device_topic(device_id, "cmd"), payload, retain=False)

    async def clear_entitlement(self, device_id: str) -> None:
        # A retained message with an empty payload deletes the retained one.
        await self._publish(device_topic(device_id, "entitlement"), b"")
