"""The agent's MQTT session: connect as this device, subscribe, hand messages on.

A thin adapter on the project's one MQTT client (:class:`common.mqtt.MqttClient`).
It connects with the device's own credentials, announces ``online`` on the
retained status topic (the broker publishes the retained ``offline`` will when
the device drops), subscribes to its entitlement and command topics and the
key-set topic, and passes every message to a handler. :meth:`MqttSession.publish`
is the bounded-time QoS 1 publish the health publisher and command results use.
Connection failures (a subscription the broker refused among them: the device
would miss its tokens) are retried forever with capped exponential backoff and
jitter, and logged once per change (a refused login as an error naming the
settings to check); a handler error is the handler's to log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.mqtt import Endpoint, Link, MqttClient, Will
from common.tls import client_tls_context
from protocol.status import OFFLINE, BadStatus, Status
from protocol.status import write as write_status
from protocol.topics import KEYS_TOPIC, device_topic

__all__ = ["Connection", "MqttSession", "quiet_closed_sockets"]

log = logging.getLogger(__name__)
_TIMEOUT_S = 10.0  # connect, and publish of the retained status
# The SUBACK may come late from a broker that does real work per subscription (a NATS
# node creates a JetStream consumer for each QoS 1 filter, slowly when a burst of
# devices reconnects). Giving up after 10 s threw that work away and moved the
# session to another node, which then redid it: the work grew instead of draining.
# A dead connection is still found by the keepalive.
_SUBSCRIBE_TIMEOUT_S = 60.0
Handler = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Connection:
    """How this device reaches the broker.

    With a TLS client certificate (Mosquitto's ``use_identity_as_username``) the
    certificate's CN is the login and ``password`` may stay None: none is sent.
    """

    host: str
    port: int
    username: str
    password: str | None = None
    protocol: int = 5  # 5 = MQTT 5, 4 = MQTT 3.1.1
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    fallbacks: tuple[tuple[str, int], ...] = ()  # the other nodes of a broker cluster

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return client_tls_context(
            ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file
        )


def online_payload(details: Mapping[str, object]) -> bytes:
    """The retained ``online`` status with the agent's details (:mod:`protocol.status`).

    Details that would not make a status the cloud accepts (over its size
    limit, not JSON) are left out, so the device still shows up online.
    """
    try:
        return write_status(Status(online=True, details=details))
    except BadStatus as exc:
        log.warning("status published without its details: %s (%s)", exc.reason, exc)
        return write_status(Status(online=True))


class MqttSession:
    """Keeps one device connected and subscribed; never gives up (:class:`MqttClient`)."""

    def __init__(
        self,
        connection: Connection,
        handler: Handler,
        *,
        status: Callable[[], dict[str, object]] = dict,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
        timeout_s: float = _TIMEOUT_S,
        subscribe_timeout_s: float = _SUBSCRIBE_TIMEOUT_S,
    ) -> None:
        self._conn = connection
        self._handler = handler
        self._status = status
        self._timeout_s = timeout_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._client = MqttClient(
            Endpoint(
                connection.host,
                connection.port,
                username=connection.username,
                password=connection.password,
                identifier=connection.username,
                protocol=connection.protocol,
                tls_context=connection.tls_context(),
                fallbacks=connection.fallbacks,
            ),
            log=log,
            will=Will(device_topic(connection.username, "status"), write_status(OFFLINE)),
            timeout_s=timeout_s,
            backoff_base_s=backoff_base,
            backoff_cap_s=backoff_cap,
            rng=rng or random.Random(),
        )
        self.connected = self._client.connected

    @property
    def connects(self) -> int:
        """How many times the session connected (reconnects included)."""
        return self._client.connects

    async def publish_status(self, *, on_connect: bool = False) -> None:
        """Announce the current status (online plus details) retained; ``on_connect``:
        the first one of a new connection, marked ``"on_connect": true`` (on NATS the
        cloud sends the current token again then: a node may replay no retained token).

        Raises:
            TransportError: the connection failed, or no PUBACK in time.
        """
        if not self.connected.is_set():
            return
        details = self._status()
        payload = online_payload({**details, "on_connect": True} if on_connect else details)
        topic = device_topic(self._conn.username, "status")
        await self._client.link.publish(topic, payload, retain=True, timeout_s=self._timeout_s)

    async def publish(
        self, topic: str, payload: bytes, *, timeout_s: float, retain: bool = False
    ) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it (PUBACK).

        Raises:
            TransportError: not connected, the connection failed, or no PUBACK
                within ``timeout_s``.
        """
        await self._client.link.publish(topic, payload, retain=retain, timeout_s=timeout_s)

    async def _subscribe(self, link: Link) -> None:
        device = self._conn.username
        await link.subscribe(
            device_topic(device, "entitlement"),
            KEYS_TOPIC,
            device_topic(device, "cmd"),
            timeout_s=self._subscribe_timeout_s,
        )

    async def _dispatch(self, link: Link) -> None:
        await self.publish_status(on_connect=True)
        async for message in link.messages():
            await self._handler(message.topic, message.payload)

    async def run(self) -> None:
        """Connect, subscribe and dispatch until cancelled."""
        conn = self._conn
        await self._client.run(
            on_connect=self._subscribe,
            consume=self._dispatch,
            connected_message=(
                f"connected to the broker at {conn.host}:{conn.port} as device {conn.username}"
            ),
        )


@contextlib.contextmanager
def quiet_closed_sockets(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While it is open, drop one known harmless error of the MQTT client.

    aiomqtt registers a socket for writing through ``call_soon_threadsafe``;
    a session whose connection attempt ends in between (a connect timeout,
    or the agent being stopped) closes the socket first, and the queued
    ``add_writer`` then fails (EBADF) with a traceback (one per device in a
    simulated fleet). Anything else goes to the handler that was there before.
    """

    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno == errno.EBADF:
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
