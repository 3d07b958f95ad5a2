"""The agent's MQTT session: connect as this device, subscribe, hand messages on.

A thin aiomqtt adapter. It connects with the device's own credentials,
announces ``online`` on the retained status topic (the broker publishes the
retained ``offline`` will when the device drops), subscribes to its
entitlement and command topics and the key-set topic, and passes every
message to a handler. :meth:`MqttSession.publish` is the bounded-time QoS 1
publish the health publisher and command results use. Connection failures
are retried forever with capped exponential backoff and jitter, and logged
once per change (a refused login as an error naming the settings to check);
a handler error is the handler's to log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from common.mqtt import SOCKET_OPTIONS, ConnectionLog, backoff_delay, protocol_version
from protocol.errors import TransportError
from protocol.topics import KEYS_TOPIC, device_topic

__all__ = ["Connection", "MqttSession", "quiet_closed_sockets"]

log = logging.getLogger(__name__)
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

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def status_payload(online: bool, **details: object) -> bytes:
    return json.dumps({"status": "online" if online else "offline", **details}).encode()


def _raise_if_cancelling() -> None:
    """Honour a cancel that an inner await swallowed.

    On Python 3.11, ``asyncio.wait_for`` (which aiomqtt uses to wait for a
    PUBACK) can drop a cancellation that races with the awaited future
    completing; the task then stays "cancelling" forever inside the message
    loop. Checking the request count after each await makes shutdown certain.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class MqttSession:
    """Keeps one device connected and subscribed; never gives up."""

    def __init__(
        self,
        connection: Connection,
        handler: Handler,
        *,
        status: Callable[[], dict[str, object]] = dict,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._conn = connection
        self._handler = handler
        self._status = status
        self._base, self._cap = backoff_base, backoff_cap
        self._rng = rng or random.Random()
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    def _make_client(self) -> aiomqtt.Client:
        conn = self._conn
        v5 = conn.protocol == 5
        return aiomqtt.Client(
            conn.host,
            conn.port,
            username=conn.username,
            password=conn.password,
            identifier=conn.username,
            protocol=protocol_version(conn.protocol),
            socket_options=SOCKET_OPTIONS,
            will=aiomqtt.Will(
                device_topic(conn.username, "status"),
                status_payload(False),
                qos=1,
                retain=True,
            ),
            clean_session=None if v5 else True,
            keepalive=30,
            timeout=10,
            tls_context=conn.tls_context(),
        )

    async def publish_status(self) -> None:
        """Announce the current status (online plus details) retained."""
        client = self._client
        if client is None or not self.connected.is_set():
            return
        payload = status_payload(True, **self._status())
        await client.publish(
            device_topic(self._conn.username, "status"), payload, qos=1, retain=True
        )
        # A cancel swallowed by aiomqtt's wait_for would leave the agent's expiry
        # timer looping with nobody to cancel it again (its TaskGroup already did).
        _raise_if_cancelling()

    async def publish(
        self, topic: str, payload: bytes, *, timeout_s: float, retain: bool = False
    ) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it (PUBACK).

        Raises:
            TransportError: not connected, the connection failed, or no PUBACK
                within ``timeout_s``.
        """
        client = self._client
        if client is None or not self.connected.is_set():
            raise TransportError("not connected to the broker")
        try:
            async with asyncio.timeout(timeout_s):
                await client.publish(topic, payload, qos=1, retain=retain, timeout=timeout_s)
        except TimeoutError as exc:
            raise TransportError(f"no PUBACK within {timeout_s}s for {topic}") from exc
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish to {topic} failed: {exc}") from exc
        finally:
            _raise_if_cancelling()

    async def run(self) -> None:
        """Connect, subscribe and dispatch until cancelled."""
        attempt = 0
        conn = self._conn
        where = f"{conn.host}:{conn.port}"
        report = ConnectionLog(log, where=where, login=conn.username)
        while True:
            try:
                async with self._make_client() as client:
                    self._client = client
                    await client.subscribe(device_topic(self._conn.username, "entitlement"), qos=1)
                    await client.subscribe(KEYS_TOPIC, qos=1)
                    await client.subscribe(device_topic(self._conn.username, "cmd"), qos=1)
                    self.connected.set()
                    self.connects += 1
                    attempt = 0
                    report.connected(
                        f"connected to the broker at {where} as device {conn.username}"
                    )
                    await self.publish_status()
                    _raise_if_cancelling()
                    async for message in client.messages:
                        await self._handler(str(message.topic), bytes(message.payload or b""))
                        _raise_if_cancelling()
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                delay = backoff_delay(attempt, base_s=self._base, cap_s=self._cap, rng=self._rng)
                attempt += 1
                report.failed(exc, retry_in_s=delay)
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()
                self._client = None


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
