"""The transport the trust chain rides on, against a real Mosquitto.

Message expiry on retained entitlements, the TLS client-certificate identity
(with a real agent and the real cloud bridge), MQTT 3.1.1 devices, the
`entitle broker certs` command and the hardening lines of the generated config.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from typer.testing import CliRunner

from agent.runtime import Agent, open_agent
from agent.session import Connection
from broker.certs import issue_local_pki
from broker.mosquitto import TlsListener, find_free_port, write_broker_config
from cloud.bridge import MqttBridge
from common.settings import BrokerAddress
from common.tasks import cancel_and_wait
from protocol.cose import decode_sign1
from protocol.token import parse_claims
from protocol.topics import KEYS_TOPIC, device_topic
from simulators import TokenRepositorySimulator
from tests.broker_fixtures import FixtureBroker
from tests.integration.test_broker_acl import receive_until, subscribe
from tests.waiting import HANG_S, eventually

pytestmark = [pytest.mark.usefixtures("require_mosquitto"), pytest.mark.timeout(60)]

CLOUD, WATCH = "cloud", "cloud-watch"
TLS_DEVICES = ("tls-agent", "tls-a", "tls-b")
DAY = 86_400


# --- fixtures and helpers ---------------------------------------------------------------


class TransportBroker(FixtureBroker):
    """A fixture broker with a TLS listener next to the password one."""

    tls_port: int
    pki: Path

    def tls_context(self, identity: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        if identity is not None:
            stem = self.pki / "clients" / identity
            context.load_cert_chain(stem.with_suffix(".pem"), stem.with_suffix(".key"))
        return context


@pytest.fixture(scope="module")
def transport_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransportBroker]:
    """One Mosquitto for the module; tests use their own device ids."""
    pki = issue_local_pki(tmp_path_factory.mktemp("pki"), devices=[CLOUD, *TLS_DEVICES])
    tls = TlsListener(
        port=find_free_port(),
        ca_file=pki / "ca.pem",
        cert_file=pki / "server.pem",
        key_file=pki / "server.key",
    )
    broker = TransportBroker(tmp_path_factory.mktemp("broker"), clouds=(CLOUD, WATCH), tls=tls)
    broker.tls_port, broker.pki = tls.port, pki
    with broker:
        # each device's role, as the cloud makes it; its certificate, not the password,
        # logs it in
        for device in TLS_DEVICES:
            broker.add_device(device)
        yield broker


@pytest.fixture
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


@asynccontextmanager
async def running_bridge(
    broker: TransportBroker,
    repo: TokenRepositorySimulator,
    *,
    protocol: int = 5,
    tls: bool = False,
) -> AsyncIterator[MqttBridge]:
    """The cloud's real bridge as the ``cloud`` login (password, or the cloud's cert)."""
    address = BrokerAddress(
        host=broker.host,
        port=broker.tls_port if tls else broker.port,
        tls=tls,
        username=None if tls else CLOUD,
        password=None if tls else SecretStr(broker.cloud_password),
    )
    bridge = MqttBridge(
        address,
        keyset_message=lambda: repo.current_keyset,
        protocol=protocol,
        tls_context=broker.tls_context(CLOUD) if tls else None,
    )
    task = asyncio.create_task(bridge.run(), name="bridge")
    try:
        await bridge.wait_connected(5)
        yield bridge
    finally:
        await cancel_and_wait([task])


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run(), name=f"agent-{agent.device_id}")
    try:
        yield agent
    finally:
        await cancel_and_wait([task])
        agent.store.close()


def remaining_lifetime(token: bytes, *, now: int) -> int:
    """The Message Expiry Interval the cloud gives a token (cloud.devices.issuing does the same)."""
    return max(1, parse_claims(decode_sign1(token, max_size=65536).payload).exp - now)


# --- message expiry ---------------------------------------------------------------------


async def test_retained_entitlement_expires_for_devices_that_connect_late(
    transport_broker: TransportBroker, repo: TokenRepositorySimulator
) -> None:
    """Published with expiry 2 s: served at once, gone 2.5 s later (the keys stay)."""
    broker = transport_broker
    device, _ = broker.new_device()
    topic = device_topic(device, "entitlement")
    token = repo.token(device, {"remote_access": int(time.time()) + DAY}, now=int(time.time()))
    async with running_bridge(broker, repo) as bridge:  # retains the key set on connect
        await bridge.publish_entitlement(device, token, expiry_s=2)
    published = time.monotonic()

    async with broker.client(device) as early:
        await subscribe(early, topic)
        await subscribe(early, KEYS_TOPIC)
        got = await receive_until(early, KEYS_TOPIC)
    assert [(m.topic.value, m.payload) for m in got][0] == (topic, token)
    assert 0 < got[0].properties.MessageExpiryInterval <= 2

    await asyncio.sleep(2.5 - (time.monotonic() - published))
    async with broker.client(device) as late:
        await subscribe(late, topic)
        await subscribe(late, KEYS_TOPIC)  # retained without expiry: the control
        got = await receive_until(late, KEYS_TOPIC)
    assert [m.topic.value for m in got] == [KEYS_TOPIC]


async def test_bridge_sets_expiry_to_the_tokens_remaining_lifetime(
    transport_broker: TransportBroker, repo: TokenRepositorySimulator
) -> None:
    broker = transport_broker
    device, _ = broker.new_device()
    now = int(time.time())
    token = repo.token(device, {"remote_access": now + DAY}, now=now, ttl=3600)
    expiry = remaining_lifetime(token, now=now)
    assert expiry == 3600
    async with broker.client(WATCH) as watch, running_bridge(broker, repo) as bridge:
        await subscribe(watch, device_topic(device, "entitlement"))
        await bridge.publish_entitlement(device, token, expiry_s=expiry)
        async with asyncio.timeout(HANG_S):
            message = await anext(aiter(watch.messages))
    assert message.payload == token
    # the broker forwards the interval minus whole seconds it held the message
    assert expiry - 1 <= message.properties.MessageExpiryInterval <= expiry


# --- TLS client certificates ------------------------------------------------------------


async def test_agent_over_tls_with_a_client_certificate_and_no_password(
    transport_broker: TransportBroker, repo: TokenRepositorySimulator, tmp_path: Path
) -> None:
    """Device and cloud both log in by certificate (CN = login); the ACL is the same."""
    broker, device = transport_broker, "tls-agent"
    client = broker.pki / "clients" / device
    connection = Connection(
        host="127.0.0.1",
        port=broker.tls_port,
        username=device,
        tls=True,
        ca_file=broker.pki / "ca.pem",
        cert_file=client.with_suffix(".pem"),
        key_file=client.with_suffix(".key"),
    )
    agent = open_agent(
        device_id=device, data_dir=tmp_path, connection=connection, root_keyset=repo.root_keyset
    )
    now = int(time.time())
    token = repo.token(device, {"remote_access": now + DAY}, now=now)
    async with running(agent), running_bridge(broker, repo, tls=True) as bridge:
        assert agent.session is not None
        await asyncio.wait_for(agent.session.connected.wait(), HANG_S)
        await bridge.publish_entitlement(device, token, expiry_s=remaining_lifetime(token, now=now))
        await eventually(lambda: agent.check("remote_access")[0])
        assert agent.check("voice_control")[0] is False
        assert agent.status_details()["connected"] is True
        assert agent.rejects.by_reason == {}
    # no password was sent: the login is the certificate's CN
    assert f"as {device} (p5, c1, k30, u'{device}')" in broker.log_path.read_text()


async def test_certificate_identity_overrides_the_claimed_username(
    transport_broker: TransportBroker,
) -> None:
    """tls-a claims to be tls-b (username, client id): it still reads only tls-a's topics."""
    broker = transport_broker
    async with broker.client(CLOUD) as cloud:
        for device in ("tls-a", "tls-b"):
            topic = device_topic(device, "entitlement")
            await cloud.publish(topic, f"token-{device}".encode(), qos=1, retain=True)
    impostor = aiomqtt.Client(
        "127.0.0.1",
        broker.tls_port,
        username="tls-b",
        password="anything",
        identifier="tls-b",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=broker.tls_context("tls-a"),
        timeout=5,
    )
    async with broker.client(CLOUD) as cloud, impostor:
        await subscribe(impostor, device_topic("tls-b", "entitlement"))
        await subscribe(impostor, device_topic("tls-b", "cmd"))
        await subscribe(impostor, device_topic("tls-a", "entitlement"))  # retained: control
        await cloud.publish(device_topic("tls-b", "cmd"), b"not for tls-a", qos=1)
        await subscribe(impostor, device_topic("tls-a", "cmd"))
        await cloud.publish(device_topic("tls-a", "cmd"), b"control", qos=1)
        got = await receive_until(impostor, device_topic("tls-a", "cmd"))
    assert [(m.topic.value, m.payload) for m in got] == [
        (device_topic("tls-a", "entitlement"), b"token-tls-a"),
        (device_topic("tls-a", "cmd"), b"control"),
    ]


def test_cli_broker_certs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from entitle.cli import app

    monkeypatch.setenv("ENTITLE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["broker", "certs", "dev-a", "dev-b"])
    assert result.exit_code == 0, result.output
    pki = tmp_path / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    for device in ("dev-a", "dev-b"):
        cert = x509.load_pem_x509_certificate((pki / f"clients/{device}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == device
        assert stat.S_IMODE(os.stat(pki / f"clients/{device}.key").st_mode) == 0o600
    server = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    assert stat.S_IMODE(os.stat(pki / "ca.key").st_mode) == 0o600

    # a second run adds a device under the same CA, so issued certs stay valid
    result = CliRunner().invoke(app, ["broker", "certs", "dev-c"])
    assert result.exit_code == 0, result.output
    assert x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes()) == ca
    assert (pki / "clients/dev-a.pem").exists() and (pki / "clients/dev-c.pem").exists()


# --- MQTT 3.1.1 -------------------------------------------------------------------------


async def test_mqtt311_agent_gets_the_retained_token_and_exp_still_protects(
    transport_broker: TransportBroker, repo: TokenRepositorySimulator, tmp_path: Path
) -> None:
    """MQTT 3.1.1 loses only the Message Expiry Interval, and the token's ``exp`` covers it.

    A 3.1.1 device connects, gets the retained token (from the bridge in 3.1.1
    mode) and enforces it. The broker keeps serving that token after it lapsed
    (no expiry property), but the verifier rejects it as ``expired``: a device
    that connects late never uses a stale token, it only gets it delivered.
    """
    broker = transport_broker
    device, password = broker.new_device()
    connection = Connection(
        host=broker.host, port=broker.port, username=device, password=password, protocol=4
    )
    now = int(time.time())
    token = repo.token(device, {"remote_access": now + DAY}, now=now, ttl=3)
    exp = now + 3

    async with broker.client(WATCH) as watch, running_bridge(broker, repo, protocol=4) as bridge:
        await subscribe(watch, device_topic(device, "entitlement"))
        await bridge.publish_entitlement(device, token, expiry_s=3)
        async with asyncio.timeout(HANG_S):
            seen = await anext(aiter(watch.messages))
    assert seen.payload == token
    assert not hasattr(seen.properties, "MessageExpiryInterval")  # nothing to expire it

    first = open_agent(
        device_id=device,
        data_dir=tmp_path / "first",
        connection=connection,
        root_keyset=repo.root_keyset,
    )
    async with running(first):
        await eventually(lambda: first.check("remote_access")[0])
        assert first.check("voice_control")[0] is False
        # the agent's own timer withdraws the feature at exp, no message needed
        await eventually(lambda: not first.check("remote_access")[0], within=exp - time.time() + 2)

    late = open_agent(
        device_id=device,
        data_dir=tmp_path / "late",
        connection=connection,
        root_keyset=repo.root_keyset,
    )
    async with running(late):
        await eventually(lambda: sum(late.rejects.by_reason.values()) > 0)
        assert late.rejects.by_reason == {"expired": 1}
        assert late.check("remote_access")[0] is False
    assert f"as {device} (p2" in broker.log_path.read_text()  # Mosquitto's name for 3.1.1


# --- generated configuration ------------------------------------------------------------


def _listener_blocks(conf: str) -> dict[str, list[str]]:
    """Lines before the first listener (``"global"``) and under each ``listener`` line."""
    blocks: dict[str, list[str]] = {"global": []}
    current = blocks["global"]
    for line in conf.splitlines():
        if line.startswith("listener "):
            current = blocks.setdefault(line, [])
        elif line and not line.startswith("#"):
            current.append(line)
    return blocks


def _setting(lines: list[str], name: str) -> str:
    (value,) = [line.split(" ", 1)[1] for line in lines if line.split(" ", 1)[0] == name]
    return value


def test_generated_config_is_hardened(tmp_path: Path) -> None:
    pki = issue_local_pki(tmp_path / "pki", devices=[])
    tls = TlsListener(
        port=8883, ca_file=pki / "ca.pem", cert_file=pki / "server.pem", key_file=pki / "server.key"
    )
    plain = _listener_blocks(
        write_broker_config(tmp_path / "plain", port=1884, accounts={CLOUD: "pw"}).read_text()
    )
    with_tls = _listener_blocks(
        write_broker_config(
            tmp_path / "tls", port=1884, accounts={CLOUD: "pw"}, tls=tls
        ).read_text()
    )
    for blocks in (plain, with_tls):
        settings = blocks["global"]
        assert _setting(settings, "allow_anonymous") == "false"
        assert int(_setting(settings, "max_queued_messages")) >= 10_000
        # set, and with room for the largest token or key set (64 KiB) plus headers
        assert 65_536 < int(_setting(settings, "max_packet_size")) <= 1_048_576
        assert _setting(settings, "per_listener_settings") == "false"
        # logins and access rules: the dynamic-security plugin, which checks SUBSCRIBE
        # and pins each device's client id to its username (test_broker_acl.py)
        assert _setting(settings, "plugin").endswith("/mosquitto_dynamic_security.so")
        assert _setting(settings, "plugin_opt_config_file").endswith("/dynamic-security.json")
        assert not any("require_certificate" in line for line in blocks["listener 1884 127.0.0.1"])

    assert set(plain) == {"global", "listener 1884 127.0.0.1"}
    secure = with_tls["listener 8883 127.0.0.1"]
    for name in ("require_certificate", "use_identity_as_username", "use_username_as_clientid"):
        assert _setting(secure, name) == "true"
    assert _setting(secure, "cafile") == str((pki / "ca.pem").resolve())
