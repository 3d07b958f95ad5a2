"""The one MQTT client of the project: aiomqtt's documented reconnect loop, written once.

The agent's session and the cloud's bridge both stand on :class:`MqttClient`::

    client = MqttClient(Endpoint(host, port, username=..., password=...), log=log)
    await client.run(on_connect=subscribe_and_announce, consume=handle_messages,
                     connected_message="connected to the broker at ...")

:meth:`MqttClient.run` is ``while True: try: async with client: ... except
MqttError: await asyncio.sleep(backoff)``: on each connection it calls
``on_connect`` with a :class:`Link` (subscribe, publish retained state), marks
itself connected, then awaits ``consume`` until the connection drops, and
reconnects with capped exponential backoff and jitter (:func:`backoff_delay`),
logging each change of state once (:class:`ConnectionLog`). It never gives up
and ends only when cancelled. For a high-rate stream (the cloud's health ingest)
:class:`BatchReceiver` is the same loop on paho's own network code in a thread,
handing messages over in batches. An :class:`Endpoint` with ``fallbacks`` (the other
nodes of a clustered broker) fails over: after each failed connect or lost
connection the next attempt goes to the next address, round robin, with the
same backoff; an address that refuses the TCP connection (a node that is down)
is skipped at once while others remain to try (:class:`Reconnects`).

Errors: aiomqtt's never leave this module. What a caller can meet is
:class:`LinkError`, a :class:`~protocol.errors.TransportError`: not connected,
no PUBACK in time, the connection failed, a subscription refused (in ``on_connect``
it ends the connection like any other: a NATS node refuses a QoS 1 subscription it
cannot back in time). A refused login stays inside the loop, logged as an error
that names the settings to check.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError  # a refused CONNACK; not re-exported
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol.errors import TransportError

__all__ = [
    "SOCKET_OPTIONS",
    "BatchReceiver",
    "ConnectionLog",
    "Endpoint",
    "Link",
    "LinkError",
    "MqttClient",
    "PersistentSession",
    "Received",
    "Reconnects",
    "Will",
    "backoff_delay",
    "protocol_version",
    "refused_login",
    "refused_subscriptions",
    "unreachable",
]

# Entitlements and health are small messages: without TCP_NODELAY, Nagle's
# algorithm meets the peer's delayed ACK and adds ~40 ms to a QoS 1 round trip.
SOCKET_OPTIONS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


class LinkError(TransportError):
    """The broker connection cannot carry the request: not connected, no PUBACK in
    time, or the connection failed (aiomqtt's ``MqttError``, mapped here)."""


def protocol_version(number: int) -> aiomqtt.ProtocolVersion:
    """5 → MQTT 5, 4 → MQTT 3.1.1."""
    return aiomqtt.ProtocolVersion.V5 if number == 5 else aiomqtt.ProtocolVersion.V311


_jitter = random.Random()


def backoff_delay(
    attempt: int, *, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None
) -> float:
    """Seconds before reconnect ``attempt`` (0-based): exponential, capped, equal jitter.

    Half the ceiling is kept so a fleet never hammers a broker that just came
    back; the other half is random so reconnects spread out.
    """
    ceiling = min(cap_s, base_s * (1 << min(attempt, 32)))
    return ceiling / 2 + (rng or _jitter).uniform(0, ceiling / 2)


def unreachable(exc: BaseException) -> bool:
    """Whether a connection attempt failed before reaching any broker: the address
    refused the TCP connection (a node that is down) or has no route.

    aiomqtt raises its own error ``from None``; the socket's error is its context.
    """
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, ConnectionRefusedError) or (
            isinstance(error, OSError) and error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
        ):
            return True
    return False


class Reconnects:
    """When to try again after a failed or lost connection (round robin over the
    endpoint's addresses; the caller moves to the next address each time).

    Each failure waits :func:`backoff_delay`, growing until a connection succeeds;
    except that an address refusing the TCP connection, while others remain untried
    in this round, is skipped after ``skip_s``. A node that is down costs its
    cluster nothing to try, and a device whose backoff had grown to 30 s otherwise
    spent that long on the dead node's turn (a NATS failover test under load ran
    out of its 120 s that way). When every address refuses, one backoff per round
    keeps a fleet from hammering a broker that comes back.
    """

    def __init__(
        self,
        addresses: int,
        *,
        base_s: float,
        cap_s: float,
        rng: random.Random | None,
        skip_s: float = 0.05,
    ) -> None:
        self._addresses = addresses
        self._base_s, self._cap_s, self._rng = base_s, cap_s, rng
        self._skip_s = skip_s
        self._attempt = 0  # backoffs since the last good connection
        self._skipped = 0  # unreachable addresses skipped in a row

    def connected(self) -> None:
        self._attempt = self._skipped = 0

    def failed(self, failure: BaseException) -> float:
        """Seconds to wait before the next attempt."""
        if unreachable(failure) and self._skipped < self._addresses - 1:
            self._skipped += 1
            return self._skip_s
        self._skipped = 0
        delay = backoff_delay(self._attempt, base_s=self._base_s, cap_s=self._cap_s, rng=self._rng)
        self._attempt += 1
        return delay


_CREDENTIALS_HINT = (
    "check the user and password in ENTITLE_BROKER_URL (mqtt://USER:PASSWORD@host:port) "
    "or ENTITLE_BROKER_PASSWORD_FILE"
)
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (0x86, 0x87)
_REFUSED_LOGIN = {
    4: "bad user name or password",
    5: "not authorized",
    0x86: "bad user name or password",
    0x87: "not authorized",
}


def refused_login(exc: BaseException) -> str | None:
    """Why the broker refused our login (a CONNACK code), or None for any other error."""
    if not isinstance(exc, MqttConnectError):
        return None
    code = exc.rc if isinstance(exc.rc, int) or exc.rc is None else exc.rc.value
    return _REFUSED_LOGIN.get(code) if code is not None else None


class ConnectionLog:
    """What a reconnect loop tells its log: each change of state once, not every attempt.

    A refused login is an error that names the settings to check; the loop
    keeps retrying (the broker may be given the account later) but repeats
    are logged at DEBUG until the state changes (connected, or another error).
    """

    def __init__(self, log: logging.Logger, *, where: str, login: str) -> None:
        self._log = log
        self._where = where
        self._login = login
        self._last: str | None = None

    def connected(self, message: str) -> None:
        """Log ``message`` (at INFO) and forget the last failure."""
        self._last = None
        self._log.info("%s", message)

    def failed(self, exc: Exception, *, retry_in_s: float) -> None:
        refused = refused_login(exc)
        if refused is not None:
            state = f"refused:{refused}"
            level = logging.ERROR
            message = (
                f"the broker at {self._where} refused login {self._login!r}: {refused}; "
                f"{_CREDENTIALS_HINT}; still retrying (next in {retry_in_s:.1f}s), "
                "as the broker may get the account later"
            )
        else:
            state = f"error:{exc}"
            level = logging.WARNING
            message = f"broker at {self._where}: {exc}; still retrying (next in {retry_in_s:.1f}s)"
        if state == self._last:
            self._log.debug("broker at %s: %s; retrying in %.1fs", self._where, exc, retry_in_s)
            return
        self._last = state
        self._log.log(level, "%s", message)


# --- the client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect.

    ``identifier`` is the MQTT client id (None: a random one); ``password`` may
    stay None with a TLS client certificate (its CN is the login). ``fallbacks``:
    more ``(host, port)`` of the same broker cluster, tried in turn after
    ``(host, port)`` when a connect fails or a connection drops.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    identifier: str | None = None
    protocol: int = 5  # 5 = MQTT 5, 4 = MQTT 3.1.1
    tls_context: ssl.SSLContext | None = None
    fallbacks: tuple[tuple[str, int], ...] = ()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every address to try, in order: ``(host, port)`` first."""
        return ((self.host, self.port), *self.fallbacks)

    @property
    def where(self) -> str:
        return ",".join(f"{host}:{port}" for host, port in self.addresses)


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes (QoS 1) when the connection drops unannounced."""

    topic: str
    payload: bytes
    retain: bool = True


@dataclass(frozen=True, slots=True)
class PersistentSession:
    """A session the broker keeps across reconnects, with acknowledgements sent by hand.

    The broker redelivers every message not acknowledged on the connection that
    received it, so a consumer acks only once a message is safe (committed).
    ``receive_maximum`` (MQTT 5) is announced, or Mosquitto allows only
    ``max_inflight_messages`` (20) unacked deliveries at a time.
    """

    expiry_s: int = 7 * 86_400
    receive_maximum: int = 1000


def refused_subscriptions(filters: Sequence[str], codes: Sequence[object]) -> list[str]:
    """The ``filters`` a SUBACK refused: a failure code (0x80 and up; paho's
    ``ReasonCode.is_failure``, or a bare number), or no code at all.

    A NATS node answers 0x80 when it cannot make the JetStream consumer of a QoS 1
    subscription in time (its stream's leader being re-elected after a node died), as
    it does for a subscription its permissions forbid.
    """
    refused = []
    for i, topic in enumerate(filters):
        code = codes[i] if i < len(codes) else None
        failed = getattr(code, "is_failure", None)
        if failed is None:
            failed = not isinstance(code, int) or code >= 0x80
        if failed:
            refused.append(topic)
    return refused


def _acked_on_arrival() -> None:
    pass


@dataclass(frozen=True, slots=True)
class Received:
    """A message as the broker delivered it; ``ack()`` sends its PUBACK in a
    :class:`PersistentSession` (only on the connection that received it) and does
    nothing otherwise (the client acked it on arrival)."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = _acked_on_arrival
    retained: bool = False  # sent because a subscription was made, not as it was published


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


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client that ``client`` wraps, for manual acknowledgements only.

    aiomqtt 2.5 has no public switch for them (empicano/aiomqtt#345 is open and its
    pull request #346, which would add ``Client(manual_ack=True)`` and
    ``Client.ack(message)``, is a draft); paho's own public ``manual_ack_set`` and
    ``ack`` are used on the client aiomqtt keeps. This is the one place the
    project reaches inside aiomqtt: when aiomqtt gains the switch, only this goes.
    """
    inner: paho.Client = client._client  # noqa: SLF001 (see the docstring)
    return inner


class Link:
    """One live connection: subscribe, publish with QoS 1, receive.

    Made by :meth:`MqttClient.run` for each connection and valid until it drops;
    every failure is a :class:`LinkError`.
    """

    def __init__(self, client: aiomqtt.Client, *, protocol: int, manual_ack: bool) -> None:
        self._client = client
        self._protocol = protocol
        self._manual_ack = manual_ack
        self.open = True

    async def subscribe(self, *filters: str, timeout_s: float | None = None) -> None:
        """Subscribe to ``filters`` with QoS 1, waiting ``timeout_s`` for the SUBACK
        (None: the client's timeout).

        Raises:
            LinkError: the connection failed, no SUBACK in time, or the broker refused a
                filter (a SUBACK failure code): a connection that silently lacks a
                subscription would never receive what is published there.
        """
        try:
            codes = await self._client.subscribe(
                [(topic, 1) for topic in filters], timeout=timeout_s
            )
        except aiomqtt.MqttError as exc:
            raise LinkError(f"subscribe to {', '.join(filters)} failed: {exc}") from exc
        finally:
            _raise_if_cancelling()
        refused = refused_subscriptions(filters, codes)
        if refused:
            raise LinkError(f"the broker refused the subscription to {', '.join(refused)}")

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        timeout_s: float,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it (PUBACK).

        Args:
            expiry_s: MQTT 5's Message Expiry Interval (the broker stops serving the
                message after it); ignored on MQTT 3.1.1, which has no properties.

        Raises:
            LinkError: the connection failed, or no PUBACK within ``timeout_s``.
        """
        properties = None
        if expiry_s is not None and self._protocol == 5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, int(expiry_s))
        try:
            async with asyncio.timeout(timeout_s):
                await self._client.publish(
                    topic,
                    payload,
                    qos=1,
                    retain=retain,
                    properties=properties,
                    timeout=timeout_s,
                )
        except TimeoutError as exc:
            raise LinkError(f"no PUBACK within {timeout_s}s for {topic}") from exc
        except aiomqtt.MqttError as exc:
            raise LinkError(f"publish to {topic} failed: {exc}") from exc
        finally:
            _raise_if_cancelling()

    async def messages(self) -> AsyncIterator[Received]:
        """The messages of every subscription, until the connection drops (LinkError)."""
        try:
            async for message in self._client.messages:
                yield Received(message.topic.value, _payload(message), self._acker(message))
                _raise_if_cancelling()
        except aiomqtt.MqttError as exc:
            raise LinkError(str(exc)) from exc

    def _acker(self, message: aiomqtt.Message) -> Callable[[], None]:
        if not self._manual_ack or message.qos == 0:
            return _acked_on_arrival

        def ack() -> None:
            # On another connection the mid means nothing: the broker redelivers instead.
            if self.open:
                _paho(self._client).ack(message.mid, message.qos)

        return ack


class MqttClient:
    """Keeps one broker connection up until cancelled; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        log: logging.Logger,
        will: Will | None = None,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if endpoint.protocol not in (4, 5):
            raise ValueError("protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        self.endpoint = endpoint
        self._log = log
        self._will = will
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rng = rng
        self._session: PersistentSession | None = None
        self._link: Link | None = None
        self._address = 0  # index into endpoint.addresses: the one tried next
        self.connected = asyncio.Event()
        self.connects = 0

    @property
    def address(self) -> tuple[str, int]:
        """The broker address of the current connection (or of the next attempt)."""
        return self.endpoint.addresses[self._address]

    def persist(self, session: PersistentSession) -> None:
        """From the next connection on, keep a persistent session with manual acks."""
        self._session = session

    @property
    def link(self) -> Link:
        """The live connection.

        Raises:
            LinkError: not connected now.
        """
        link = self._link
        if link is None or not self.connected.is_set():
            raise LinkError("not connected to the broker")
        return link

    async def wait_connected(self, timeout_s: float) -> Link:
        """The live connection, waiting up to ``timeout_s`` for one.

        Raises:
            LinkError: not connected within ``timeout_s``.
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self.connected.wait()
        except TimeoutError:
            raise LinkError(
                f"not connected to the broker at {self.endpoint.where} within {timeout_s:g}s"
            ) from None
        return self.link

    def _new_client(self) -> aiomqtt.Client:
        ep = self.endpoint
        v5 = ep.protocol == 5
        session = self._session
        options: dict[str, object] = {}
        identifier = ep.identifier
        if session is not None:
            # Persistent: a restarted worker (same client id) gets back what it had not
            # acked. MQTT 3.1.1 needs an explicit client id, and takes clean session off
            # (paho refuses clean_start there); MQTT 5 takes clean start off.
            identifier = identifier or ep.username
            options["clean_start"] = False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
            options["clean_session"] = None if v5 else False
            if v5:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = session.expiry_s
                properties.ReceiveMaximum = session.receive_maximum
                options["properties"] = properties
        else:
            options["clean_session"] = None if v5 else True
        will = self._will
        host, port = self.address
        client = aiomqtt.Client(
            host,
            port,
            username=ep.username,
            password=ep.password,
            identifier=identifier,
            protocol=protocol_version(ep.protocol),
            tls_context=ep.tls_context,
            socket_options=SOCKET_OPTIONS,
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            will=None if will is None else aiomqtt.Will(will.topic, will.payload, 1, will.retain),
            **options,  # type: ignore[arg-type]
        )
        if session is not None:
            _paho(client).manual_ack_set(True)
        return client

    async def run(
        self,
        *,
        on_connect: Callable[[Link], Awaitable[None]],
        consume: Callable[[Link], Awaitable[None]],
        connected_message: str,
    ) -> NoReturn:
        """Connect, call ``on_connect``, mark connected, ``consume``; again, until cancelled.

        A failure of either callback's :class:`LinkError` (or the connection's) ends
        the connection and is retried after a backoff; any other error propagates.
        """
        ep = self.endpoint
        retries = Reconnects(
            len(ep.addresses), base_s=self._backoff[0], cap_s=self._backoff[1], rng=self._rng
        )
        report = ConnectionLog(self._log, where=ep.where, login=ep.username or "")
        while True:
            failure: Exception
            try:
                async with self._new_client() as client:
                    link = Link(client, protocol=ep.protocol, manual_ack=self._session is not None)
                    try:
                        await on_connect(link)
                        _raise_if_cancelling()
                        self._link = link
                        self.connected.set()
                        self.connects += 1
                        retries.connected()
                        report.connected(connected_message)
                        await consume(link)
                    finally:
                        link.open = False
                        self.connected.clear()
                        self._link = None
                failure = LinkError("the connection ended")
            except (aiomqtt.MqttError, LinkError) as exc:
                failure = exc
            delay = retries.failed(failure)
            report.failed(failure, retry_in_s=delay)
            # the next attempt goes to the next node of a cluster (a dead node's
            # address would otherwise be retried for as long as it stays down)
            self._address = (self._address + 1) % len(ep.addresses)
            await asyncio.sleep(delay)


# --- batch receiving -------------------------------------------------------------------


_ACK_TURN_S = 0.01


class BatchReceiver:
    """A consuming connection for a high-rate stream, messages handed over in batches.

    aiomqtt spends ~165 µs of CPU per received message (a future and a task
    wake-up per PUBLISH, measured on a drained persistent session); paho's own
    network loop in a thread spends ~48 µs, acknowledgements included. So this
    runs paho's loop in a thread: each message arrives as a :class:`Received` in
    an inbox, and ``deliver`` gets whatever gathered there, in the event loop,
    one call per wake-up rather than one per message.

    The session is persistent with manual acknowledgements (a
    :class:`PersistentSession`): ``ack()`` may be called from any thread; it
    queues the PUBACK for the network thread, which sends the queue at its next
    turn (within 10 ms) and only if the connection that received the message is
    still the current one (after a reconnect the broker redelivers instead).
    One wake-up per turn rather than one per ack: acking from the event loop
    straight through paho woke its thread once per message. Reconnects
    follow :func:`backoff_delay`, round robin over the endpoint's addresses, and
    are logged through :class:`ConnectionLog`. ``connected`` is set once the
    broker granted every subscription on the current connection.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        subscriptions: Sequence[str],
        session: PersistentSession,
        log: logging.Logger,
        keepalive_s: int = 30,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if endpoint.protocol not in (4, 5):
            raise ValueError("protocol must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        self.endpoint = endpoint
        self.subscriptions = tuple(subscriptions)
        self._session = session
        self._log = log
        self._keepalive_s = keepalive_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rng = rng
        self._address = 0
        self._generation = 0  # bumped when a connection ends; acks name theirs
        self._ack_lock = threading.Lock()
        self._acks: list[tuple[int, int]] = []  # (connection generation, mid) to PUBACK
        self._inbox: list[Received] = []
        self._inbox_lock = threading.Lock()
        self._stopping = threading.Event()
        self._granted = threading.Event()
        self._refused: Exception | None = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.received = 0  # messages handed over since start (redeliveries included)
        self.cpu_s = 0.0  # CPU seconds of the network thread (receiving, acking)

    def _new_client(self) -> paho.Client:
        ep = self.endpoint
        v5 = ep.protocol == 5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=ep.identifier or ep.username or "",
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False,
        )
        if ep.username is not None:
            client.username_pw_set(ep.username, ep.password)
        if ep.tls_context is not None:
            client.tls_set_context(ep.tls_context)
        client.manual_ack_set(True)
        client.max_inflight_messages_set(self._session.receive_maximum)
        return client

    def _connect(self, client: paho.Client, host: str, port: int) -> None:
        if self.endpoint.protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session.expiry_s
            properties.ReceiveMaximum = self._session.receive_maximum
            client.connect(host, port, self._keepalive_s, clean_start=False, properties=properties)
        else:
            client.connect(host, port, self._keepalive_s)
        sock = client.socket()
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            for level, option, value in SOCKET_OPTIONS:
                sock.setsockopt(level, option, value)

    def _acker(self, generation: int, mid: int) -> Callable[[], None]:
        def ack() -> None:
            # queued for the network thread, which sends it only on the same connection
            with self._ack_lock:
                self._acks.append((generation, mid))

        return ack

    def _network(self, loop: asyncio.AbstractEventLoop, hand_over: Callable[[], None]) -> None:
        """The thread: connect, subscribe, receive until the connection drops; again."""
        ep = self.endpoint
        report = ConnectionLog(self._log, where=ep.where, login=ep.username or "")
        client = self._new_client()
        retries = Reconnects(
            len(ep.addresses), base_s=self._backoff[0], cap_s=self._backoff[1], rng=self._rng
        )

        def on_connect(c: paho.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            code = getattr(reason, "value", reason)
            if isinstance(code, int) and code != 0:
                self._refused = MqttConnectError(code)
                return
            c.subscribe([(topic, 1) for topic in self.subscriptions])

        def on_subscribe(c: paho.Client, _u: object, _m: int, codes: list[Any], _p: object) -> None:
            refused = refused_subscriptions(self.subscriptions, codes)
            if refused:
                self._refused = LinkError(f"the broker refused the subscription to {refused}")
                return
            self._granted.set()

        def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
            try:
                topic = message.topic
            except UnicodeDecodeError:
                topic = ""  # Mosquitto refuses such topics; the consumer rejects an empty one
            ack = self._acker(generation, message.mid) if message.qos else _acked_on_arrival
            with self._inbox_lock:
                self._inbox.append(Received(topic, bytes(message.payload), ack, message.retain))
                first = len(self._inbox) == 1
            if first:
                loop.call_soon_threadsafe(hand_over)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        while not self._stopping.is_set():
            host, port = ep.addresses[self._address]
            generation = self._generation
            self._refused = None
            self._granted.clear()
            failure: Exception = LinkError("the connection ended")
            announced = False
            try:
                self._connect(client, host, port)
                while not self._stopping.is_set():
                    before = time.thread_time()
                    with self._ack_lock:
                        acks, self._acks = self._acks, []
                    for sent_on, mid in acks:  # an older connection's: redelivered instead
                        if sent_on == generation:
                            client.ack(mid, 1)
                    # acks queued meanwhile wait for the next turn: at most this long
                    rc = client.loop(timeout=_ACK_TURN_S)
                    self.cpu_s += time.thread_time() - before
                    if self._refused is not None:
                        failure = self._refused
                        break
                    if rc != paho.MQTT_ERR_SUCCESS:
                        failure = LinkError(f"connection lost ({paho.error_string(rc)})")
                        break
                    if not announced and self._granted.is_set():
                        announced = True
                        retries.connected()
                        self.connects += 1
                        loop.call_soon_threadsafe(self.connected.set)
                        report.connected(f"receiving from the broker at {host}:{port}")
            except (OSError, ValueError) as exc:
                failure = exc
            finally:
                with self._ack_lock:
                    self._generation += 1
                loop.call_soon_threadsafe(self.connected.clear)
            if self._stopping.is_set():
                client.disconnect()  # unacked messages stay in the broker's session
                return
            client.disconnect()
            delay = retries.failed(failure)
            report.failed(failure, retry_in_s=delay)
            self._address = (self._address + 1) % len(ep.addresses)
            self._stopping.wait(delay)

    async def run(self, deliver: Callable[[list[Received]], None]) -> NoReturn:
        """Receive until cancelled; ``deliver`` gets each batch in this event loop."""
        loop = asyncio.get_running_loop()

        def hand_over() -> None:
            with self._inbox_lock:
                batch, self._inbox = self._inbox, []
            if batch:
                self.received += len(batch)
                deliver(batch)

        self._stopping.clear()
        thread = threading.Thread(
            target=self._network, args=(loop, hand_over), name="mqtt-batch-receiver", daemon=True
        )
        thread.start()
        try:
            await asyncio.Future()  # until cancelled
            raise AssertionError("unreachable")
        finally:
            self._stopping.set()
            await asyncio.to_thread(thread.join, 5.0)
