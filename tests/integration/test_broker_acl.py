"""The broker enforces who may log in, subscribe, read and write, with real MQTT 5 clients.

Mosquitto's dynamic-security plugin refuses a forbidden SUBSCRIBE with reason code
"Not authorized" (0x87) and also checks each delivery; a denied PUBLISH is dropped
and answered with PUBACK 0x87. Denials are proven both ways: by the reason code, and
by non-delivery (a control message on a topic the client may read is published after
the forbidden one by the same publisher, and once it arrives, plus a short grace
period, nothing forbidden may have been received).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.certs import issue_local_pki
from broker.errors import BrokerError
from broker.mosquitto import MosquittoBroker, TlsListener, find_free_port, write_broker_config
from broker.passwd import PasswdFileAccounts
from common.dynsec import BrokerAccountsUnavailable, DynsecAccounts
from protocol.errors import TopicError
from protocol.topics import KEYS_TOPIC, device_topic, health_share_subscription
from tests.broker_fixtures import FixtureBroker

GRANTED_QOS1, NOT_AUTHORIZED = 1, 0x87
pytestmark = pytest.mark.timeout(30)


async def receive_until(
    client: aiomqtt.Client, control: str, *, within: float = 3.0, grace: float = 0.2
) -> list[aiomqtt.Message]:
    """Messages up to and including one on ``control``, plus any within ``grace``."""
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(within):
        async for message in client.messages:
            got.append(message)
            if message.topic.matches(control):
                break
    try:
        async with asyncio.timeout(grace):
            async for message in client.messages:
                got.append(message)
    except TimeoutError:
        pass
    return got


def topics(messages: list[aiomqtt.Message]) -> list[str]:
    return [m.topic.value for m in messages]


def record_pubacks(client: aiomqtt.Client) -> list[ReasonCode]:
    """PUBACK reason codes, which aiomqtt does not return from publish()."""
    codes: list[ReasonCode] = []
    inner = client._client  # noqa: SLF001 - the only way to see PUBACK reason codes
    original = inner.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        codes.append(rc)
        original(c, userdata, mid, rc, props)

    inner.on_publish = on_publish
    return codes


async def subscribe(client: aiomqtt.Client, topic: str) -> int:
    (code,) = await client.subscribe(topic, qos=1)
    return int(code.value) if isinstance(code, ReasonCode) else int(code)


# --- config and accounts --------------------------------------------------------------


def test_config_files(tmp_path) -> None:
    (tmp_path / "passwd").write_text("stale:$7$embedded\n")  # the embedded broker's
    conf = write_broker_config(
        tmp_path, port=18830, accounts={"cloud": "c", "dev-1": "d"}, persistence=True
    )
    text = conf.read_text()
    for line in (
        "per_listener_settings false",
        "allow_anonymous false",
        "plugin /usr/lib/",
        f"plugin_opt_config_file {tmp_path.resolve()}/dynamic-security.json",
        "max_queued_messages 100000",
        "max_packet_size 262144",
        "set_tcp_nodelay true",
        f"persistence_location {tmp_path.resolve()}/data/",
        "listener 18830 127.0.0.1",
    ):
        assert line in text
    assert "acl_file" not in text and "password_file" not in text
    assert not (tmp_path / "passwd").exists()
    dynsec_file = tmp_path / "dynamic-security.json"
    assert stat.S_IMODE(os.stat(dynsec_file).st_mode) == 0o600
    config = json.loads(dynsec_file.read_text())
    assert config["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    clients = {c["username"]: c for c in config["clients"]}
    assert clients["dev-1"]["clientid"] == "dev-1" and "clientid" not in clients["cloud"]
    roles = {r["rolename"]: r for r in config["roles"]}
    device_acls = {(a["acltype"], a["topic"]) for a in roles["entitle-device-dev-1"]["acls"]}
    assert device_acls == {
        *(
            (t, device_topic("dev-1", c))
            for t in ("subscribeLiteral", "publishClientReceive")
            for c in ("entitlement", "cmd")
        ),
        ("subscribeLiteral", KEYS_TOPIC),
        ("publishClientReceive", KEYS_TOPIC),
        *(("publishClientSend", device_topic("dev-1", c)) for c in ("health", "status", "cmd/res")),
    }
    # a rewrite keeps logins added since (the broker writes them into this file)
    write_broker_config(tmp_path, port=18830, accounts={"dev-2": "x"})
    write_broker_config(tmp_path, port=18830, accounts={"cloud": "c2"})
    config = json.loads(dynsec_file.read_text())
    assert {c["username"] for c in config["clients"]} == {"cloud", "dev-1", "dev-2"}
    write_broker_config(tmp_path, port=18830, accounts={"cloud": "c3"}, replace_accounts=True)
    config = json.loads(dynsec_file.read_text())
    assert {c["username"] for c in config["clients"]} == {"cloud"}


def test_a_corrupt_dynamic_security_file_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "dynamic-security.json").write_text("{not json")
    with pytest.raises(BrokerError, match="not valid JSON.*restore it"):
        write_broker_config(tmp_path, port=18830, accounts={"cloud": "c"})
    assert (tmp_path / "dynamic-security.json").read_text() == "{not json"


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "$SYS", "", "x" * 65, "a b", "é"])
def test_invalid_usernames_refused(tmp_path, bad: str) -> None:
    with pytest.raises(TopicError):
        write_broker_config(tmp_path, port=1, accounts={bad: "pw"})
    # refused before any connection is tried (port 1: nothing listens)
    with pytest.raises(TopicError):
        DynsecAccounts("127.0.0.1", 1, username="cloud", password="x").set_password(bad, "pw")
    with pytest.raises(TopicError):
        PasswdFileAccounts(tmp_path).set_password(bad, "pw")


async def test_device_cannot_take_a_cloud_login(broker: FixtureBroker) -> None:
    with pytest.raises(ValueError, match="not a device's"):
        await asyncio.to_thread(broker.accounts.set_password, "cloud", "pw")
    with pytest.raises(ValueError, match="not a device's"):
        await asyncio.to_thread(broker.accounts.remove, "cloud")
    async with broker.client("cloud"):  # its password is unchanged
        pass
    with pytest.raises(ValueError, match="reserved"):
        PasswdFileAccounts(broker.directory).set_password("cloud", "pw")


def test_accounts_of_a_broker_that_is_not_there_say_what_to_do() -> None:
    accounts = DynsecAccounts("127.0.0.1", find_free_port(), username="cloud", password="x")
    with pytest.raises(BrokerAccountsUnavailable, match="dynamic-security plugin"):
        accounts.set_password("dev-1", "pw")


# --- authentication -------------------------------------------------------------------


async def test_anonymous_and_wrong_password_refused(broker: FixtureBroker) -> None:
    broker.add_device("A")
    for username, password in [(None, None), ("A", "wrong"), ("ghost", "x"), ("A", "")]:
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with broker.client(username, password or "", identifier="intruder"):
                pass
        assert refused.value.rc is not None and refused.value.rc.value == NOT_AUTHORIZED


async def test_added_device_logs_in_and_removed_one_cannot(broker: FixtureBroker) -> None:
    password = broker.add_device("dev-1")  # over $CONTROL: no file rewritten, no reload
    async with broker.client("dev-1"):
        pass
    broker.accounts.remove("dev-1")
    with pytest.raises(aiomqtt.MqttCodeError):
        async with broker.client("dev-1", password):
            pass
    broker.accounts.set_password("dev-1", "new")
    broker.accounts.set_password("dev-1", "newer")  # an existing device: a new password
    with pytest.raises(aiomqtt.MqttCodeError):
        async with broker.client("dev-1", "new"):
            pass
    async with broker.client("dev-1", "newer"):
        pass
    assert "Reloading config" not in broker.log_path.read_text()


async def test_removed_device_is_disconnected_at_once(broker: FixtureBroker) -> None:
    broker.add_device("dev-1")
    async with broker.client("dev-1") as device:
        await subscribe(device, device_topic("dev-1", "cmd"))
        await asyncio.to_thread(broker.accounts.remove, "dev-1")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(10):  # a hang guard: the kick comes at once
                await anext(aiter(device.messages))
    assert "disconnected by administrative action" in broker.log_path.read_text()


# --- authorisation --------------------------------------------------------------------


async def test_device_cannot_read_another_devices_topics(broker: FixtureBroker) -> None:
    broker.add_device("A")
    broker.add_device("B")
    async with broker.client("cloud") as cloud, broker.client("A") as a:
        # a retained token for B is there before A subscribes
        await cloud.publish(device_topic("B", "entitlement"), b"token-B", qos=1, retain=True)
        for topic in (device_topic("B", "entitlement"), device_topic("B", "cmd")):
            assert await subscribe(a, topic) == NOT_AUTHORIZED
        assert await subscribe(a, device_topic("A", "cmd")) == GRANTED_QOS1
        await cloud.publish(device_topic("B", "entitlement"), b"token-B2", qos=1)
        await cloud.publish(device_topic("B", "cmd"), b'{"op": "reboot"}', qos=1)
        await cloud.publish(device_topic("A", "cmd"), b"control", qos=1)
        got = await receive_until(a, device_topic("A", "cmd"))
    assert topics(got) == [device_topic("A", "cmd")]


async def test_wildcard_subscriptions_are_refused(broker: FixtureBroker) -> None:
    broker.add_device("A")
    broker.add_device("B")
    async with broker.client("cloud") as cloud:
        for device in ("A", "B"):
            topic = device_topic(device, "entitlement")
            await cloud.publish(topic, f"token-{device}".encode(), qos=1, retain=True)
        await cloud.publish(KEYS_TOPIC, b"keyset", qos=1, retain=True)
        for wildcard in (
            "#",
            "entitle/v1/dev/+/entitlement",
            "entitle/v1/#",
            "entitle/v1/dev/A/#",
            "$SYS/#",
            health_share_subscription(),
            "$share/other/entitle/v1/dev/A/entitlement",
        ):
            async with broker.client("A") as a:
                assert await subscribe(a, wildcard) == NOT_AUTHORIZED, wildcard
                await subscribe(a, device_topic("A", "cmd"))
                await cloud.publish(device_topic("B", "cmd"), b"not for A", qos=1)
                await cloud.publish(device_topic("A", "cmd"), b"control", qos=1)
                got = await receive_until(a, device_topic("A", "cmd"))
            assert topics(got) == [device_topic("A", "cmd")], wildcard


async def test_device_cannot_publish_as_another_device(broker: FixtureBroker) -> None:
    broker.add_device("A")
    broker.add_device("B")
    async with broker.client("cloud") as cloud, broker.client("A") as a:
        await subscribe(cloud, "entitle/v1/dev/+/health")
        pubacks = record_pubacks(a)
        for channel in ("health", "status", "cmd/res"):
            await a.publish(device_topic("B", channel), b"forged", qos=1)
        await a.publish(device_topic("A", "health"), b"own", qos=1)
        got = await receive_until(cloud, device_topic("A", "health"))
    assert topics(got) == [device_topic("A", "health")]
    assert [rc.value for rc in pubacks[:3]] == [NOT_AUTHORIZED] * 3
    assert pubacks[3].value < 0x80


async def test_keys_readable_by_devices_but_only_the_cloud_writes(broker: FixtureBroker) -> None:
    broker.add_device("A")
    async with broker.client("cloud") as cloud:
        await cloud.publish(KEYS_TOPIC, b"keyset-1", qos=1, retain=True)
        async with broker.client("A") as a:
            pubacks = record_pubacks(a)
            await a.publish(KEYS_TOPIC, b"evil-keyset", qos=1, retain=True)
            assert [rc.value for rc in pubacks] == [NOT_AUTHORIZED]
        async with broker.client("A") as a:
            assert await subscribe(a, KEYS_TOPIC) == GRANTED_QOS1
            async with asyncio.timeout(3):
                message = await anext(aiter(a.messages))
    assert (message.topic.value, message.payload) == (KEYS_TOPIC, b"keyset-1")


async def test_devices_write_their_own_status_health_and_results(broker: FixtureBroker) -> None:
    broker.add_device("A")
    async with broker.client("cloud") as cloud, broker.client("A") as a:
        await subscribe(cloud, "entitle/v1/dev/A/#")
        pubacks = record_pubacks(a)
        for channel in ("status", "health", "cmd/res"):
            await a.publish(device_topic("A", channel), channel.encode(), qos=1)
        got = await receive_until(cloud, device_topic("A", "cmd/res"))
        # and A may not write what only the cloud writes to it
        await a.publish(device_topic("A", "entitlement"), b"self-issued", qos=1)
        await a.publish(device_topic("A", "cmd"), b"self-command", qos=1)
    assert topics(got) == [device_topic("A", c) for c in ("status", "health", "cmd/res")]
    assert [rc.value for rc in pubacks[3:]] == [NOT_AUTHORIZED] * 2


async def test_cloud_consumes_health_with_a_shared_subscription(broker: FixtureBroker) -> None:
    broker.add_device("A")
    broker.add_device("B")
    async with broker.client("cloud") as cloud:
        assert await subscribe(cloud, health_share_subscription()) == GRANTED_QOS1
        async with broker.client("A") as a, broker.client("B") as b:
            await a.publish(device_topic("A", "health"), b'{"seq": 1}', qos=1)
            await b.publish(device_topic("B", "health"), b'{"seq": 1}', qos=1)
        received: set[str] = set()
        async with asyncio.timeout(3):
            async for message in cloud.messages:
                received.add(message.topic.value)
                if len(received) == 2:
                    break
    assert received == {device_topic("A", "health"), device_topic("B", "health")}


async def test_client_id_is_pinned_so_no_session_takeover(broker: FixtureBroker) -> None:
    broker.add_device("A")
    broker.add_device("B")
    async with broker.client("cloud") as cloud, broker.client("B") as b:
        await subscribe(b, device_topic("B", "cmd"))
        # A's login may only use client id "A": as "B" it is refused before any session
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with broker.client("A", identifier="B"):
                pass
        assert refused.value.rc is not None and refused.value.rc.value == NOT_AUTHORIZED
        await cloud.publish(device_topic("B", "cmd"), b"for B", qos=1)
        got = await receive_until(b, device_topic("B", "cmd"))
    assert [m.payload for m in got] == [b"for B"]  # B was never disconnected


async def test_oversized_packet_disconnects_the_client(broker: FixtureBroker) -> None:
    broker.add_device("A")
    # MQTT 3.1.1: an MQTT 5 client would learn the limit from CONNACK and not send it
    async with broker.client("A", protocol=aiomqtt.ProtocolVersion.V311) as a:
        await a.publish(device_topic("A", "health"), b"x" * 300_000, qos=0)
        with pytest.raises(aiomqtt.MqttError, match="[Dd]isconnected"):
            async with asyncio.timeout(3):
                await anext(aiter(a.messages))


# --- process lifecycle ----------------------------------------------------------------


async def test_retained_token_with_expiry_survives_a_restart(broker: FixtureBroker) -> None:
    broker.add_device("A")
    expiry = Properties(PacketTypes.PUBLISH)
    expiry.MessageExpiryInterval = 3600
    async with broker.client("cloud") as cloud:
        await cloud.publish(
            device_topic("A", "entitlement"), b"token", qos=1, retain=True, properties=expiry
        )
    port = broker.port
    broker.restart()
    assert broker.port == port
    async with broker.client("A") as a:
        await subscribe(a, device_topic("A", "entitlement"))
        async with asyncio.timeout(3):
            message = await anext(aiter(a.messages))
    assert message.payload == b"token" and message.retain
    assert 0 < message.properties.MessageExpiryInterval <= 3600


def test_start_failure_names_the_log(tmp_path) -> None:
    first = MosquittoBroker(tmp_path / "one", accounts={"cloud": "pw"})
    with first:
        second = MosquittoBroker(
            tmp_path / "two", accounts={"cloud": "pw"}, port=first.port, startup_timeout=2
        )
        try:
            with pytest.raises(BrokerError, match="(?s)did not start.*Address already in use"):
                second.start()
        finally:
            second.stop()
    assert not second.is_running


async def test_kill_then_start_again(broker: FixtureBroker) -> None:
    pid = broker.pid
    broker.kill()
    assert not broker.is_running and not (broker.directory / "mosquitto.pid").exists()
    broker.start()
    assert broker.pid != pid and broker.is_running
    # the accounts channel connects to the new process
    broker.add_device("after-restart")
    async with broker.client("after-restart"):
        pass


async def test_shared_broker_with_unique_devices(shared_broker: FixtureBroker) -> None:
    device, _ = shared_broker.new_device()
    async with shared_broker.client("cloud") as cloud, shared_broker.client(device) as d:
        await subscribe(d, device_topic(device, "cmd"))
        await cloud.publish(device_topic(device, "cmd"), b"hi", qos=1)
        assert [m.payload for m in await receive_until(d, device_topic(device, "cmd"))] == [b"hi"]


# --- TLS with client certificates ----------------------------------------------------


def tls_client(
    broker: FixtureBroker, pki: Path, device: str | None, timeout: float = 5
) -> aiomqtt.Client:
    certs = {}
    if device is not None:
        certs = {"certfile": str(pki / f"clients/{device}.pem")}
        certs["keyfile"] = str(pki / f"clients/{device}.key")
    tls = aiomqtt.TLSParameters(ca_certs=str(pki / "ca.pem"), **certs)
    return aiomqtt.Client(
        "127.0.0.1",
        broker.tls_port,
        identifier=device or "anon",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_params=tls,
        timeout=timeout,
    )


async def test_tls_client_certificate_is_the_identity(tmp_path) -> None:
    pki = issue_local_pki(tmp_path / "pki", devices=["A", "B"])
    tls = TlsListener(
        port=find_free_port(),
        ca_file=pki / "ca.pem",
        cert_file=pki / "server.pem",
        key_file=pki / "server.key",
    )
    assert stat.S_IMODE(os.stat(pki / "clients/A.key").st_mode) == 0o600
    with FixtureBroker(tmp_path / "broker", tls=tls) as broker:
        broker.tls_port = tls.port  # type: ignore[attr-defined]
        broker.add_device("A")  # its role; the certificate, not a password, logs it in
        with pytest.raises(aiomqtt.MqttError):  # no client certificate: handshake refused
            async with tls_client(broker, pki, None, timeout=1):
                pass
        async with broker.client("cloud") as cloud, tls_client(broker, pki, "A") as a:
            for topic in (device_topic("B", "cmd"), device_topic("A", "cmd")):
                await subscribe(a, topic)
            await cloud.publish(device_topic("B", "cmd"), b"not for A", qos=1)
            await cloud.publish(device_topic("A", "cmd"), b"for A", qos=1)
            got = await receive_until(a, device_topic("A", "cmd"))
        assert [(m.topic.value, m.payload) for m in got] == [(device_topic("A", "cmd"), b"for A")]
        log = broker.log_path.read_text()
        assert "peer did not return a certificate" in log and "u'A')" in log


# --- embedded fallback (amqtt, MQTT 3.1.1 only) ---------------------------------------


def v311(broker: Any, username: str | None, password: str | None) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=username,
        password=password,
        identifier=username or "anon",
        protocol=aiomqtt.ProtocolVersion.V311,
        timeout=5,
    )


async def test_embedded_broker_enforces_logins_and_acl(embedded_broker: Any) -> None:
    broker = embedded_broker
    broker.accounts.set_password("A", "pa")
    broker.accounts.set_password("B", "pb")
    for username, password in [(None, None), ("A", "wrong"), ("ghost", "x")]:
        with pytest.raises(aiomqtt.MqttCodeError):
            async with v311(broker, username, password):
                pass
    async with v311(broker, "cloud", broker.cloud_password) as cloud, v311(broker, "A", "pa") as a:
        await cloud.publish(device_topic("B", "entitlement"), b"token-B", qos=1, retain=True)
        # amqtt checks SUBSCRIBE too: 0x80 for anything that could match B's topics
        for topic in (device_topic("B", "entitlement"), "#", "entitle/v1/dev/+/entitlement"):
            assert await subscribe(a, topic) == 0x80, topic
        assert await subscribe(a, device_topic("A", "cmd")) == GRANTED_QOS1
        await cloud.subscribe("entitle/v1/dev/+/health", qos=1)
        await a.publish(device_topic("B", "health"), b"forged", qos=1)
        await a.publish(device_topic("A", "health"), b"own", qos=1)
        assert topics(await receive_until(cloud, device_topic("A", "health"))) == [
            device_topic("A", "health")
        ]
        await cloud.publish(device_topic("B", "cmd"), b"not for A", qos=1)
        await cloud.publish(device_topic("A", "cmd"), b"control", qos=1)
        assert topics(await receive_until(a, device_topic("A", "cmd"))) == [
            device_topic("A", "cmd")
        ]
