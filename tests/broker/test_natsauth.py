"""The NATS auth responder's decision, the permissions it signs and its queue (no server)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import nkeys
import pytest

from broker.natsauth import (
    Answerers,
    Refused,
    decide,
    decode_claims,
    device_of,
    encode_jwt,
    response,
    still_awaited,
)
from common.credentials import mosquitto_hash
from common.natsaccounts import device_permissions, subject
from tests.waiting import eventually

NOW = 1_800_000_000


def _request(user: str, password: str, *, mqtt_id: str | None = None, kind: str = "mqtt") -> Any:
    client: dict[str, Any] = {"type": kind, "user": user}
    if mqtt_id is not None or kind == "mqtt":
        client["mqtt_id"] = user if mqtt_id is None else mqtt_id
    return {
        "nats": {
            "user_nkey": "UNEWUSER",
            "server_id": {"id": "NSERVER"},
            "client_info": client,
            "connect_opts": {"user": user, "pass": password},
        }
    }


def test_a_device_gets_only_its_own_subjects() -> None:
    request = _request("gw-1", "pw")
    claims = decide(request, device_of(request), mosquitto_hash("pw"), now=NOW, ttl_s=60)
    assert claims["aud"] == "ENTITLE" and claims["sub"] == "UNEWUSER"
    assert claims["exp"] == NOW + 60
    nats = claims["nats"]
    assert nats["allowed_connection_types"] == ["MQTT"]
    assert nats["pub"] == {
        "allow": [
            "entitle.v1.dev.gw-1.health",
            "entitle.v1.dev.gw-1.status",
            "entitle.v1.dev.gw-1.cmd.res",
        ]
    }
    assert nats["sub"] == {
        "allow": [
            "entitle.v1.dev.gw-1.entitlement",
            "entitle.v1.dev.gw-1.cmd",
            "entitle.v1.keys",
            "$MQTT.sub.>",
        ]
    }
    assert nats == {
        **device_permissions("gw-1"),
        **{k: nats[k] for k in ("allowed_connection_types", "type", "version")},
    }


@pytest.mark.parametrize(
    ("request_", "stored", "reason"),
    [
        (_request("gw-1", "wrong"), mosquitto_hash("pw"), "bad user name or password"),
        (_request("gw-1", "pw"), None, "bad user name or password"),
        (_request("gw-1", "pw", mqtt_id="gw-2"), mosquitto_hash("pw"), "client id"),
        (_request("gw-1", "pw", kind="nats"), mosquitto_hash("pw"), "MQTT only"),
        (_request("a.b", "pw"), mosquitto_hash("pw"), "not a device id"),
        (_request("gw/+", "pw"), mosquitto_hash("pw"), "not a device id"),
        (_request("", ""), mosquitto_hash(""), "not a device id"),
    ],
)
def test_refusals(request_: Any, stored: str | None, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        decide(request_, device_of(request_), stored, now=NOW, ttl_s=60)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_jwts_are_signed_by_the_issuer_as_nats_reads_them() -> None:
    seed = nkeys.encode_seed(bytes(range(32)), nkeys.PREFIX_BYTE_ACCOUNT)
    issuer = nkeys.from_seed(seed)
    token = encode_jwt(
        response(_request("gw-1", "x"), user_jwt="U.J.S", error=None), issuer=issuer, now=NOW
    )
    header, body, signature = token.split(".")
    assert json.loads(_b64(header)) == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert issuer.verify(f"{header}.{body}".encode(), _b64(signature))
    claims = decode_claims(token)
    assert claims["iss"] == issuer.public_key.decode() and claims["iat"] == NOW
    assert claims["aud"] == "NSERVER" and claims["nats"]["jwt"] == "U.J.S"
    assert claims["nats"]["type"] == "authorization_response"
    with pytest.raises(Refused):
        decode_claims("not-a-jwt")


def test_subjects_of_topics() -> None:
    assert subject("entitle/v1/dev/gw-1/cmd/res") == "entitle.v1.dev.gw-1.cmd.res"
    for bad in ("a.b", "a/+", "a/#", "a b"):
        with pytest.raises(ValueError):
            subject(bad)


def test_accounts_of_a_cluster_that_is_not_there_say_what_to_do() -> None:
    import socket

    from common.dynsec import BrokerAccountsUnavailable
    from common.natsaccounts import NatsAccounts

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accounts = NatsAccounts(
        [f"nats://127.0.0.1:{port}"], username="cloud", password="x", timeout_s=1
    )
    try:
        with pytest.raises(BrokerAccountsUnavailable, match="entitle broker run --engine nats"):
            accounts.set_password("dev-1", "pw")
    finally:
        accounts.close()


@pytest.mark.parametrize(
    ("stamps", "waited_s", "awaited"),
    [
        ({"iat": NOW, "exp": NOW + 5}, 3.9, True),
        ({"iat": NOW, "exp": NOW + 5}, 4.0, False),  # its answer would come too late
        ({"iat": NOW, "exp": NOW + 2}, 0.9, True),
        ({"iat": NOW, "exp": NOW + 2}, 1.5, False),
        ({}, 1e6, True),  # no patience said: answered
        ({"iat": NOW, "exp": NOW}, 1e6, True),
        ({"iat": "x", "exp": NOW + 5}, 1e6, True),
    ],
)
def test_a_request_is_answered_only_while_its_node_still_waits(
    stamps: dict[str, Any], waited_s: float, awaited: bool
) -> None:
    assert still_awaited({**_request("gw-1", "pw"), **stamps}, waited_s) is awaited


async def test_a_burst_is_answered_in_arrival_order_a_few_at_a_time() -> None:
    """A burst started all at once made every answer late (160 of 2,000 logins accepted):
    the answerers take requests first come, first served, at most ``size`` at a time."""
    now = [100.0]
    started: list[tuple[int, float]] = []
    release = asyncio.Event()
    in_flight = peak = 0

    async def handle(request: int, *, waited_s: float) -> None:
        nonlocal in_flight, peak
        started.append((request, waited_s))
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1

    answerers: Answerers[int] = Answerers(handle, size=4, clock=lambda: now[0])
    for request in range(10):
        answerers.put(request)
    now[0] = 103.5
    running = asyncio.create_task(answerers.run())
    try:
        await eventually(lambda: len(started) == 4, what=lambda: started)
        assert started == [(0, 3.5), (1, 3.5), (2, 3.5), (3, 3.5)]
        release.set()
        await eventually(lambda: len(started) == 10, what=lambda: started)
        assert [request for request, _ in started] == list(range(10))
        assert peak == 4
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_an_answerer_goes_on_after_a_request_it_could_not_answer() -> None:
    """One answerer: the request that raises costs that request, not the ones behind it."""
    handled: list[int] = []

    async def handle(request: int, *, waited_s: float) -> None:
        if request == 0:
            raise RuntimeError("a request no rule foresaw")
        handled.append(request)

    answerers: Answerers[int] = Answerers(handle, size=1)
    for request in range(3):
        answerers.put(request)
    running = asyncio.create_task(answerers.run())
    try:
        await eventually(lambda: handled == [1, 2], what=lambda: (handled, running))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
