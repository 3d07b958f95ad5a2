"""Device logins on a NATS cluster, added and removed at run time: no file, no reload.

NATS checks each device's login through *auth callout*: the node the device
connects to asks ``$SYS.REQ.USER.AUTH``, and Entitle's responders
(:mod:`broker.natsauth`, one beside each node, run by ``entitle broker run
--engine nats``) answer with a signed user whose permissions come from
:mod:`protocol.topics`. The responders look the device up in a replicated
JetStream key-value bucket (:data:`LOGINS_BUCKET`: device id -> password hash),
which is all :class:`NatsAccounts` writes: a device can log in the moment
``set_password`` returns, on every node, and nothing is reloaded. The cloud is
not on that path: devices keep connecting while it is down.

:class:`NatsAccounts` is the real ``cloud.ports.BrokerAccounts`` for NATS, as
:class:`common.dynsec.DynsecAccounts` is for Mosquitto. It speaks the NATS
protocol (nats-py) with the cloud's own login, from a thread of its own (the
issuing service calls it blocking, from a worker thread).

Errors: :class:`~common.dynsec.BrokerAccountsUnavailable` (a
:class:`~protocol.errors.TransportError`); ``TopicError``: a username that is not
a device id.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from common.credentials import mosquitto_hash
from common.dynsec import BrokerAccountsUnavailable
from protocol.topics import check_device_id, device_reads, device_writes

__all__ = [
    "ACCOUNT",
    "AUTH_SUBJECT",
    "KICK_SUBJECT",
    "LOGINS_BUCKET",
    "NatsAccounts",
    "device_permissions",
    "subject",
]

ACCOUNT = "ENTITLE"  # the NATS account of the cloud, its responders and every device
LOGINS_BUCKET = "entitle_logins"  # device id -> mosquitto_hash(password)
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"  # where nodes ask the responders (auth callout)
KICK_SUBJECT = "_entitle.kick"  # device id: the responders disconnect its connections
# What a QoS 1 subscription needs besides its topics: the server delivers it from a
# JetStream consumer to $MQTT.sub.<nuid> (an MQTT client cannot name that subject).
_MQTT_DELIVERY = "$MQTT.sub.>"

T = TypeVar("T")


def subject(topic: str) -> str:
    """The NATS subject of an MQTT topic (NATS's own mapping: ``a/b`` is ``a.b``).

    Entitle's topics hold no ``.``, space or wildcard (device ids cannot), so the
    mapping is the plain one.
    """
    if any(c in topic for c in ". +#"):
        raise ValueError(f"{topic!r} is not a concrete Entitle topic")
    return topic.replace("/", ".")


def device_permissions(device_id: str) -> dict[str, Any]:
    """The NATS user permissions of a device, from the one topic table: subscribe
    and receive its own reads, publish its own writes, nothing else."""
    return {
        "pub": {"allow": [subject(t) for t in device_writes(device_id)]},
        "sub": {"allow": [*(subject(t) for t in device_reads(device_id)), _MQTT_DELIVERY]},
    }


class NatsAccounts:
    """A :class:`cloud.ports.BrokerAccounts` over the responders' key-value bucket.

    Blocking; one NATS connection per instance, made on first use and kept by an
    event loop in a thread of its own; :meth:`close` ends both.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        username: str,
        password: str | None,
        timeout_s: float = 10.0,
    ) -> None:
        self.servers = list(servers)
        self.timeout_s = timeout_s
        self._username, self._password = username, password
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NatsClient | None = None
        self._kv: KeyValue | None = None

    # --- BrokerAccounts -------------------------------------------------------------

    def set_password(self, username: str, password: str) -> None:
        """Create the device's login, or change its password (at once, on every node)."""
        check_device_id(username)
        hashed = mosquitto_hash(password).encode()
        self._run(self._put(username, hashed), f"set the login of {username}")

    def remove(self, username: str) -> None:
        """Delete the device's login and have the responders disconnect it at once; its
        next connect is refused (an unknown login is fine)."""
        check_device_id(username)
        self._run(self._delete(username), f"remove the login of {username}")

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(self.timeout_s)
        except (FutureTimeout, nats.errors.Error):
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout_s)
        if not loop.is_running():
            loop.close()
        self._nc = self._kv = None

    async def _shutdown(self) -> None:
        """Close the connection and end whatever is still running on the loop."""
        if self._nc is not None:
            await self._nc.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the NATS connection ----------------------------------------------------------

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._nc = await nats.connect(
                servers=self.servers,
                user=self._username,
                password=self._password,
                connect_timeout=self.timeout_s,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                name=f"{self._username} accounts",
            )
            try:
                js = self._nc.jetstream(timeout=self.timeout_s)
                self._kv = await js.key_value(LOGINS_BUCKET)
            except BaseException:
                nc, self._nc = self._nc, None
                await nc.close()  # the next call connects afresh
                raise
        return self._kv

    async def _put(self, key: str, value: bytes) -> None:
        await (await self._bucket()).put(key, value)

    async def _delete(self, key: str) -> None:
        await (await self._bucket()).delete(key)
        assert self._nc is not None
        await self._nc.publish(KICK_SUBJECT, key.encode())
        await self._nc.flush()

    def _run(self, coroutine: Coroutine[Any, Any, T], what: str) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="nats-accounts", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(self.timeout_s * 2)
        except FutureTimeout as exc:
            future.cancel()
            raise self._unavailable(what, "no answer in time") from exc
        except nats.js.errors.BucketNotFoundError as exc:
            raise self._unavailable(what, f"no {LOGINS_BUCKET} bucket") from exc
        except (nats.errors.Error, OSError) as exc:
            raise self._unavailable(what, str(exc) or type(exc).__name__) from exc

    def _unavailable(self, what: str, why: str) -> BrokerAccountsUnavailable:
        return BrokerAccountsUnavailable(
            f"NATS accounts at {', '.join(self.servers)}: cannot {what} ({why}); is the "
            "cluster running ('entitle broker run --engine nats'), and is this the cloud's "
            "login?"
        )
