"""The cloud's MQTT identity: publishes tokens and key sets retained, QoS 1.

One long-lived aiomqtt client, kept connected by :meth:`MqttBridge.run`
(capped exponential backoff with jitter). On every connect it first retains
the key-set message on ``entitle/v1/keys``. With MQTT 5 each token carries a
Message Expiry Interval equal to its remaining lifetime, so the broker stops
serving it once it lapsed; MQTT 3.1.1 (``mqtt_protocol = 4``) has no
properties and relies on ``exp`` alone. A publish made while disconnected
waits up to ``publish_timeout_s`` for the connection, then raises
:class:`protocol.errors.TransportError`; aiomqtt's errors never leave here.

With a :class:`MessageConsumer` (the health ingest) the same connection also
subscribes to the consumer's topics, on a persistent session (clean start off,
a session expiry) with manual acknowledgement: each message is handed over
with an ``ack`` that sends the PUBACK only when the consumer calls it, after
its batch committed, and only on the connection that received it (after a
reconnect the broker redelivers whatever was not acked). aiomqtt 2.5 has no
manual-ack switch of its own, so the underlying paho client's is used.
The connection also announces a Receive Maximum, or Mosquitto allows only
``max_inflight_messages`` (20) unacked deliveries and batches stay tiny.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.health.ingest import Incoming
from cloud.settings import CloudSettings
from common.mqtt import SOCKET_OPTIONS, ConnectionLog, backoff_delay, protocol_version
from common.settings import BrokerAddress
from protocol.errors import TransportError
from protocol.topics import KEYS_TOPIC, device_topic

__all__ = ["MessageConsumer", "MqttBridge", "backoff_delay"]

_log = logging.getLogger(__name__)


def _raise_if_cancelling() -> None:
    # Python 3.11's asyncio.wait_for (used inside aiomqtt) can swallow a cancellation
    # that races with the awaited result; the task still counts it, so honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MessageConsumer(Protocol):
    """Receives the messages of ``subscriptions`` and acks each once it is safe."""

    subscriptions: Sequence[str]

    def offer(self, message: Incoming) -> None: ...


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
        if protocol not in (4, 5):
            raise ValueError("protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        self._broker = broker
        self._keyset_message = keyset_message
        self._protocol = protocol
        self._tls_context = tls_context
        self._identifier = identifier
        self._publish_timeout_s = publish_timeout_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        self._consumer = consumer
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum

    def attach(self, consumer: MessageConsumer) -> None:
        """Consume ``consumer.subscriptions`` from the next connection on."""
        self._consumer = consumer

    @classmethod
    def from_settings(
        cls, settings: CloudSettings, *, keyset_message: Callable[[], bytes]
    ) -> MqttBridge:
        context = settings.broker_tls_context()
        return cls(
            settings.broker,
            keyset_message=keyset_message,
            protocol=settings.mqtt_protocol,
            tls_context=context,
        )

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once connected (and the key set is retained); TransportError on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise TransportError(
                f"not connected to the broker at {self._broker.host}:{self._broker.port} "
                f"within {timeout_s:g}s"
            ) from None

    def _new_client(self) -> aiomqtt.Client:
        password = self._broker.password.get_secret_value() if self._broker.password else None
        if self._consumer is not None:
            return self._consumer_client(password)
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=password,
            identifier=self._identifier,
            protocol=protocol_version(self._protocol),
            tls_context=self._tls_context,
            socket_options=SOCKET_OPTIONS,
            timeout=self._publish_timeout_s,
            keepalive=30,
        )

    def _consumer_client(self, password: str | None) -> aiomqtt.Client:
        # Persistent session: a restarted worker (same username = same client id)
        # gets back what it had not acked. MQTT 3.1.1 needs an explicit client id.
        identifier = self._identifier or self._broker.username
        properties = None
        if self._protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry_s
            properties.ReceiveMaximum = self._receive_maximum
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=password,
            identifier=identifier,
            protocol=protocol_version(self._protocol),
            tls_context=self._tls_context,
            socket_options=SOCKET_OPTIONS,
            timeout=self._publish_timeout_s,
            keepalive=30,
            # MQTT 5: clean start off; 3.1.1: clean session off (paho refuses clean_start there)
            clean_start=False if self._protocol == 5 else MQTT_CLEAN_START_FIRST_ONLY,
            clean_session=None if self._protocol == 5 else False,
            properties=properties,
        )
        client._client.manual_ack_set(True)  # noqa: SLF001 (see the module docstring)
        return client

    def _filter(self, topic: str) -> str:
        # MQTT 3.1.1 is what the embedded amqtt broker speaks, and it has no shared
        # subscriptions: subscribe plainly. Several workers then each get every
        # message; (device_id, seq) dedupe still stores each report once.
        if self._protocol == 4 and topic.startswith("$share/"):
            return topic.split("/", 2)[2]
        return topic

    def _acker(self, client: aiomqtt.Client, message: aiomqtt.Message) -> Callable[[], None]:
        def ack() -> None:
            # On another connection the mid means nothing: the broker redelivers instead.
            if self._client is client and message.qos > 0:
                client._client.ack(message.mid, message.qos)  # noqa: SLF001

        return ack

    async def _consume(self, client: aiomqtt.Client) -> None:
        consumer = self._consumer
        if consumer is None:
            # Nothing is subscribed: the iterator ends only by raising on disconnect.
            async for _ in client.messages:
                pass
            return
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode() if payload is not None else b""
            consumer.offer(Incoming(message.topic.value, payload, self._acker(client, message)))

    async def run(self) -> None:
        """Stay connected until cancelled, reconnecting with backoff."""
        attempt = 0
        where = f"{self._broker.host}:{self._broker.port}"
        report = ConnectionLog(_log, where=where, login=self._broker.username or "")
        while True:
            try:
                async with self._new_client() as client:
                    await client.publish(KEYS_TOPIC, self._keyset_message(), qos=1, retain=True)
                    if self._consumer is not None:  # subscribed before "connected" is announced
                        topics = [self._filter(t) for t in self._consumer.subscriptions]
                        await client.subscribe([(topic, 1) for topic in topics])
                    self._client = client
                    self._ready.set()
                    attempt = 0
                    report.connected(f"connected to the broker at {where}; key set retained")
                    await self._consume(client)
                failure = aiomqtt.MqttError("the connection ended")
            except aiomqtt.MqttError as exc:
                failure = exc
            finally:
                self._ready.clear()
                self._client = None
            delay = backoff_delay(attempt, base_s=self._backoff[0], cap_s=self._backoff[1])
            attempt += 1
            report.failed(failure, retry_in_s=delay)
            await asyncio.sleep(delay)

    async def _publish(
        self,
        topic: str,
        payload: bytes,
        *,
        properties: Properties | None = None,
        retain: bool = True,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._publish_timeout_s
        await self.wait_connected(self._publish_timeout_s)
        client = self._client
        if client is None:
            raise TransportError("the broker connection dropped before publishing")
        try:
            await client.publish(
                topic,
                payload,
                qos=1,
                retain=retain,
                properties=properties,
                timeout=max(0.1, deadline - loop.time()),
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish to {topic} failed: {exc}") from exc

    async def publish_entitlement(self, device_id: str, token: bytes, *, expiry_s: int) -> None:
        properties = None
        if self._protocol == 5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, int(expiry_s))
        await self._publish(device_topic(device_id, "entitlement"), token, properties=properties)

    async def publish_keyset(self, data: bytes) -> None:
        await self._publish(KEYS_TOPIC, data)

    async def publish_command(self, device_id: str, payload: bytes) -> None:
        """A command, QoS 1 and not retained: a reboot must not rerun on every reconnect."""
        await self._publish(device_topic(device_id, "cmd"), payload, retain=False)

    async def clear_entitlement(self, device_id: str) -> None:
        # A retained message with an empty payload deletes the retained one.
        await self._publish(device_topic(device_id, "entitlement"), b"")
