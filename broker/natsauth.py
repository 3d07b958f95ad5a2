"""The NATS auth-callout responder: who may connect, as what, answered beside each node.

Every node of an Entitle NATS cluster sends each device's CONNECT to
``$SYS.REQ.USER.AUTH`` (auth callout); this responder answers it. It accepts a
device only if

- it connects over MQTT (no NATS, WebSocket or leaf connection),
- its MQTT client id is its username (so no device can take over, or discard,
  another device's session),
- the username is a device id with a login in the ``entitle_logins`` bucket
  and the password matches it,

and signs a user for the ``ENTITLE`` account whose permissions come from the one
topic table (:func:`common.natsaccounts.device_permissions`). Anything else gets
an error response: the node refuses the CONNECT. The cloud's logins are static
users of the node configuration and never reach here.

The decision is :func:`decide` (pure: request claims, stored hash, ``now``);
:func:`serve` is the NATS adapter. Run as ``python -m broker.natsauth CONFIG``
(``entitle broker run --engine nats`` does that, once per node, in a queue group).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import nats
import nats.js.errors
import nkeys
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from common.credentials import verify_password
from common.natsaccounts import (
    ACCOUNT,
    AUTH_SUBJECT,
    KICK_SUBJECT,
    LOGINS_BUCKET,
    device_permissions,
)
from common.natsstreams import HEALTH_STREAM, ensure_health_stream
from protocol.errors import TopicError
from protocol.topics import check_device_id

__all__ = [
    "Answerers",
    "Refused",
    "ResponderConfig",
    "decide",
    "decode_claims",
    "encode_jwt",
    "serve",
    "still_awaited",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUE = "entitle-auth"
READY = "entitle-auth ready"  # logged once the responder answers
# A node waits for an answer as long as its ``authorization { timeout }`` says
# (broker.natsconfig.AUTH_TIMEOUT_S) and stamps each request with it (``exp - iat``).
# A read of the bucket that takes longer than LOOKUP_S (its leader died with a node
# and a new one is being elected) falls back to the copy this responder keeps by
# watching the bucket, so devices can log in again at once.
LOOKUP_S = 0.5
# Requests are answered in arrival order, at most ANSWERING at a time. Started all at
# once, a burst of 2,000 logins interleaved so that each answer was ready only near
# the end, after the node had stopped waiting: 160 of 2,000 were accepted (docs/nats.md).
ANSWERING = 64
# A request that has waited so long that its answer would reach the node after the
# node stopped waiting is dropped unanswered: answering it only delays the next ones.
MARGIN_S = 1.0


class Refused(Exception):  # noqa: N818 (a decision, not a failure of ours)
    """Why a CONNECT is refused (sent back to the node, which logs it)."""


@dataclass(frozen=True, slots=True)
class ResponderConfig:
    """What ``entitle broker run`` hands each responder (a 0600 JSON file)."""

    servers: tuple[str, ...]  # its own node first
    username: str
    password: str
    issuer_seed: str  # account nkey seed; its public key is the nodes' auth_callout issuer
    replicas: int
    login_ttl_s: int
    system_password: str  # the SYS account's login: connections are kicked with it

    @classmethod
    def read(cls, path: Path) -> ResponderConfig:
        raw = json.loads(path.read_text())
        return cls(**{**raw, "servers": tuple(raw["servers"])})


# --- JWTs as NATS writes them (header.claims.signature, ed25519-nkey) ------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())


def encode_jwt(claims: dict[str, Any], *, issuer: Any, now: int) -> str:
    """Sign ``claims`` with the ``issuer`` key pair (``iss``, ``iat`` and ``jti`` set)."""
    body = {**claims, "iat": now, "iss": issuer.public_key.decode()}
    body["jti"] = base64.b32encode(hashlib.sha256(json.dumps(body).encode()).digest()).decode()
    signed = f"{_HEADER}.{_b64(json.dumps(body).encode())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (the node's request: it comes over the node's own
    connection, so its signature adds nothing here)."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (IndexError, ValueError) as exc:
        raise Refused("unreadable authorization request") from exc
    if not isinstance(claims, dict):
        raise Refused("unreadable authorization request")
    return claims


# --- the decision ----------------------------------------------------------------------


def device_of(request: dict[str, Any]) -> str:
    """The device id a request claims, checked; :class:`Refused` otherwise."""
    nats_claims = request.get("nats") or {}
    client = nats_claims.get("client_info") or {}
    if client.get("type") != "mqtt":
        raise Refused("devices connect over MQTT only")
    username = (nats_claims.get("connect_opts") or {}).get("user") or ""
    try:
        check_device_id(username)
    except TopicError as exc:
        raise Refused("the username is not a device id") from exc
    if client.get("mqtt_id") != username:
        raise Refused("the MQTT client id must be the device id")
    return str(username)


def decide(
    request: dict[str, Any], device_id: str, stored: str | None, *, now: int, ttl_s: int
) -> dict[str, Any]:
    """The user claims to sign for ``request``, or :class:`Refused`.

    Args:
        request: the node's authorization request claims.
        device_id: the device it claims to be, checked: ``device_of(request)``.
        stored: the device's password hash from the bucket (None: no such login).
        now: epoch seconds; the user expires ``ttl_s`` later (the node then closes
            the connection and the device logs in again, so a removed login ends).
    """
    nats_claims = request["nats"]
    password = (nats_claims.get("connect_opts") or {}).get("pass") or ""
    if stored is None or not verify_password(password, stored):
        raise Refused("bad user name or password")
    return {
        "sub": nats_claims["user_nkey"],
        "aud": ACCOUNT,
        "name": device_id,
        "exp": now + ttl_s,
        "nats": {
            **device_permissions(device_id),
            "allowed_connection_types": ["MQTT"],
            "type": "user",
            "version": 2,
        },
    }


def still_awaited(request: dict[str, Any], waited_s: float, *, margin_s: float = MARGIN_S) -> bool:
    """Whether the node still waits for the answer to ``request`` after ``waited_s``
    in this responder's queue.

    The node waits the request's ``exp - iat`` (both stamped by its clock, so no skew
    between machines counts), of which the answer's way back needs ``margin_s``. A
    request without both stamps is always answered.
    """
    iat, exp = request.get("iat"), request.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int) or exp <= iat:
        return True
    return waited_s < exp - iat - margin_s


def response(request: dict[str, Any], *, user_jwt: str | None, error: str | None) -> dict[str, Any]:
    """The authorization response claims: the signed user, or the refusal."""
    nats_claims = request.get("nats") or {}
    body: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt is not None:
        body["jwt"] = user_jwt
    if error is not None:
        body["error"] = error
    return {
        "sub": nats_claims.get("user_nkey", ""),
        "aud": (nats_claims.get("server_id") or {}).get("id", ""),
        "nats": body,
    }


# --- the adapter -----------------------------------------------------------------------


async def _bucket(js: Any, replicas: int) -> KeyValue:
    try:
        return await js.key_value(LOGINS_BUCKET)  # type: ignore[no-any-return]
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        config = KeyValueConfig(bucket=LOGINS_BUCKET, history=1, replicas=replicas)
        return await js.create_key_value(config)  # type: ignore[no-any-return]
    except nats.js.errors.BadRequestError:  # another responder created it meanwhile
        return await js.key_value(LOGINS_BUCKET)  # type: ignore[no-any-return]


async def _kick(system: Any, device_id: str, *, servers: int) -> int:
    """Disconnect every MQTT connection of ``device_id`` on every node (a deleted
    login); how many were kicked."""
    inbox = system.new_inbox()
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await replies.put(msg.data)

    sub = await system.subscribe(inbox, cb=collect)
    kicked = 0
    try:
        query = json.dumps({"mqtt_client": device_id}).encode()
        await system.publish("$SYS.REQ.SERVER.PING.CONNZ", query, reply=inbox)
        for _ in range(servers):  # one answer per running node; a dead one never answers
            try:
                reply = json.loads(await asyncio.wait_for(replies.get(), timeout=2))
            except TimeoutError:
                break
            server_id = (reply.get("server") or {}).get("id")
            for connection in (reply.get("data") or {}).get("connections") or []:
                cid = json.dumps({"cid": connection["cid"]}).encode()
                await system.request(f"$SYS.REQ.SERVER.{server_id}.KICK", cid, timeout=2)
                kicked += 1
    finally:
        await sub.unsubscribe()
    return kicked


class Answerers(Generic[T]):
    """Requests handled in arrival order, at most ``size`` at a time; each handling is
    told how long its request waited in the queue (``clock``: monotonic seconds)."""

    def __init__(
        self,
        handle: Callable[..., Awaitable[None]],
        *,
        size: int = ANSWERING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._handle = handle
        self._size = size
        self._clock = clock
        self._waiting: asyncio.Queue[tuple[float, T]] = asyncio.Queue()

    def put(self, request: T) -> None:
        self._waiting.put_nowait((self._clock(), request))

    async def run(self) -> None:
        """Handle requests until cancelled."""
        async with asyncio.TaskGroup() as group:
            for i in range(self._size):
                group.create_task(self._answer(), name=f"entitle-auth-answerer-{i}")

    async def _answer(self) -> None:
        while True:
            arrived, request = await self._waiting.get()
            try:
                await self._handle(request, waited_s=self._clock() - arrived)
            except (TimeoutError, nats.errors.Error) as exc:  # the respond itself
                log.warning("could not answer an authorization request: %s", exc)
            except Exception:  # a request no rule foresaw: this answerer goes on
                log.exception("authorization request not answered")


async def serve(config: ResponderConfig, *, stop: asyncio.Event) -> None:
    """Answer authorization requests until ``stop`` is set."""
    issuer = nkeys.from_seed(config.issuer_seed.encode())
    nc = await nats.connect(
        servers=list(config.servers),
        user=config.username,
        password=config.password,
        dont_randomize=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        name="entitle-auth",
    )
    js = nc.jetstream(timeout=10)
    while True:
        try:
            kv = await _bucket(js, config.replicas)
            # before any device can log in: a report sent then must land in the stream
            if await ensure_health_stream(js, replicas=config.replicas):
                log.info("created the JetStream stream %s", HEALTH_STREAM)
            break
        except (TimeoutError, nats.errors.Error) as exc:  # JetStream not up yet
            log.info("waiting for JetStream: %s", exc)
            await asyncio.sleep(0.2)

    known: dict[str, str] = {}  # device id -> hash: the bucket as last seen

    async def watch() -> None:
        """Keep ``known`` up to date from the bucket (puts and deletes, in order)."""
        while True:
            try:
                async for entry in await kv.watchall():
                    if entry is None:  # the initial values are all in
                        continue
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        known.pop(entry.key, None)
                    else:
                        known[entry.key] = entry.value.decode()
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("watching %s: %s; watching again", LOGINS_BUCKET, exc)
                await asyncio.sleep(0.5)

    async def stored_hash(device_id: str) -> str | None:
        try:
            entry = await asyncio.wait_for(kv.get(device_id), LOOKUP_S)
        except nats.js.errors.KeyNotFoundError:
            known.pop(device_id, None)
            return None
        except (TimeoutError, nats.errors.Error) as exc:
            if device_id not in known:
                raise
            log.info("login of %s from the watched copy (bucket: %s)", device_id, exc)
            return known[device_id]
        value = entry.value.decode() if entry.value else None
        if value is not None:
            known[device_id] = value
        return value

    dropped = 0

    async def handle(msg: Msg, *, waited_s: float) -> None:
        nonlocal dropped
        request: dict[str, Any] = {}
        now = int(time.time())
        try:
            request = decode_claims(msg.data.decode(errors="replace"))
            if not still_awaited(request, waited_s):
                dropped += 1
                if dropped == 1 or dropped % 100 == 0:
                    log.warning(
                        "%d login(s) dropped: they waited %.1f s here, past the node's "
                        "patience (a burst of logins; raise ANSWERING or add responders)",
                        dropped,
                        waited_s,
                    )
                return
            device_id = device_of(request)
            stored = await stored_hash(device_id)
            user = encode_jwt(
                decide(request, device_id, stored, now=now, ttl_s=config.login_ttl_s),
                issuer=issuer,
                now=now,
            )
            reply = response(request, user_jwt=user, error=None)
        except Refused as refused:
            reply = response(request, user_jwt=None, error=str(refused))
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("authorization lookup failed: %s", exc)
            reply = response(request, user_jwt=None, error="login store unavailable")
        await msg.respond(encode_jwt(reply, issuer=issuer, now=now).encode())

    answerers: Answerers[Msg] = Answerers(handle)

    async def answer(msg: Msg) -> None:
        # nats-py calls a subscription's callback one message at a time: the answerers
        # take them from the queue, so one slow lookup holds up no other login
        answerers.put(msg)

    answering = asyncio.create_task(answerers.run(), name="entitle-auth-answerers")

    system = await nats.connect(
        servers=list(config.servers),
        user="system",
        password=config.system_password,
        dont_randomize=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        name="entitle-auth-system",
    )

    async def kick(msg: Msg) -> None:
        device_id = msg.data.decode(errors="replace")
        try:
            check_device_id(device_id)
            kicked = await _kick(system, device_id, servers=len(config.servers))
        except (TimeoutError, TopicError, nats.errors.Error, ValueError) as exc:
            log.warning("could not disconnect %r: %s", device_id, exc)
            return
        log.info("disconnected %s (%d connection(s)): its login was removed", device_id, kicked)

    watching = asyncio.create_task(watch(), name="entitle-auth-watch")
    await nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=answer)
    # one responder per removal is enough: it asks every node
    await nc.subscribe(KICK_SUBJECT, queue=QUEUE, cb=kick)
    await nc.flush()
    log.warning(READY)
    try:
        await stop.wait()
    finally:
        watching.cancel()
        answering.cancel()
        await asyncio.gather(watching, answering, return_exceptions=True)
        await nc.drain()
        await system.close()


async def _main(path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(ResponderConfig.read(path), stop=stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(Path(sys.argv[1])))
