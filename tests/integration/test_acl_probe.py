"""An ACL probe generated from the topic table, run once against a real Mosquitto.

Three devices each hold one MQTT 5 connection and subscribe, with a distinct
subscription identifier per filter, to every topic of every device (all of
``CHANNELS``) and to the wildcards an attacker would try. The cloud publishes a
probe on every topic twice, retained before the subscriptions and live after
them; every device publishes on every topic and on the key-set topic while a
cloud-side subscriber listens to ``entitle/v1/#``. All probes go out first and
then one short wait collects what arrived.

The expectation is the design's table, not the broker's configuration: a device
subscribes to and reads only its own ``entitlement`` and ``cmd`` (plus ``keys``),
named literally, and writes only its own ``health``, ``status`` and ``cmd/res``.
Every other SUBSCRIBE — wildcards and shared groups included — is refused with
0x87. So the own topics are the controls that prove the path works (they must
arrive) and everything else must not. Each case
is its own test id, e.g. ``dev-a-sub-dev-b-entitlement`` or ``dev-a-pub-keys``.

The probe runs on both engines (``[mosquitto]``, ``[nats]``: a 3-node NATS cluster
of broker.nats, the devices spread over its nodes). NATS speaks MQTT 3.1.1: no
subscription identifiers (what a subscription got is told by topic), a refused
SUBSCRIBE is SUBACK 0x80, and a forbidden PUBLISH is acknowledged and dropped, so
there the check is that nothing arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
import pytest_asyncio
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.tasks import cancel_and_wait
from protocol.topics import CHANNELS, KEYS_TOPIC, device_topic
from tests.broker_fixtures import FixtureBroker, FixtureCluster
from tests.integration.test_broker_acl import record_pubacks, subscribe

pytestmark = [pytest.mark.usefixtures("require_mosquitto"), pytest.mark.timeout(60)]

DEVICES = ("dev-a", "dev-b", "dev-c")
CLOUD, WATCH = "cloud", "cloud-watch"
DEVICE_READS = frozenset({"entitlement", "cmd"})
DEVICE_WRITES = frozenset({"health", "status", "cmd/res"})
WILDCARDS = {
    "hash": "#",
    "plus5": "+/+/+/+/+",
    "any-entitlement": "entitle/v1/dev/+/entitlement",
    "sys": "$SYS/#",
    "control": "$CONTROL/#",
    "share-health": "$share/cloud/entitle/v1/dev/+/health",
    "share-cmd-res": "$share/cloud/entitle/v1/dev/+/cmd/res",
    "share-other-health": "$share/anything/entitle/v1/dev/+/health",
    "share-dev-a-entitlement": "$share/cloud/entitle/v1/dev/dev-a/entitlement",
}
NOT_AUTHORIZED = 0x87
SUBACK_FAILURE_311 = 0x80
TOPICS = [device_topic(d, c) for d in DEVICES for c in CHANNELS] + [KEYS_TOPIC]
COLLECT_TIMEOUT_S, GRACE_S = 5.0, 0.5


def _slug(channel: str) -> str:
    return channel.replace("/", "-")


def _readable(device: str, topic: str) -> bool:
    """What the design lets ``device`` read."""
    return topic == KEYS_TOPIC or any(topic == device_topic(device, c) for c in DEVICE_READS)


def _writable(device: str, topic: str) -> bool:
    """What the design lets ``device`` write."""
    return any(topic == device_topic(device, c) for c in DEVICE_WRITES)


@dataclass(frozen=True, slots=True)
class SubCase:
    id: str
    device: str
    filter: str

    @property
    def granted(self) -> bool:
        """Only a device's own readable topics, named literally, may be subscribed to."""
        return _readable(self.device, self.filter)

    def expected(self) -> frozenset[tuple[str, str]]:
        """(kind, topic) the subscription must get: both probes of its one topic."""
        if not self.granted:
            return frozenset()
        return frozenset((kind, self.filter) for kind in ("retained", "live"))


@dataclass(frozen=True, slots=True)
class PubCase:
    id: str
    device: str
    topic: str

    @property
    def allowed(self) -> bool:
        return _writable(self.device, self.topic)


def _topic_slug(topic: str) -> str:
    if topic == KEYS_TOPIC:
        return "keys"
    _, _, _, device, channel = topic.split("/", 4)
    return f"{device}-{_slug(channel)}"


SUB_CASES = [
    SubCase(f"{d}-sub-{_topic_slug(t)}", d, t) for d in DEVICES for t in TOPICS if t != KEYS_TOPIC
] + [SubCase(f"{d}-sub-{name}", d, f) for d in DEVICES for name, f in WILDCARDS.items()]
PUB_CASES = [PubCase(f"{d}-pub-{_topic_slug(t)}", d, t) for d in DEVICES for t in TOPICS]


@dataclass
class ProbeResult:
    """What each subscription received and what each device publish achieved."""

    engine: str = "mosquitto"
    received: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # sub case id
    delivered: set[str] = field(default_factory=set)  # pub case ids the cloud saw
    puback: dict[str, int] = field(default_factory=dict)  # pub case id -> reason code
    suback: dict[str, int] = field(default_factory=dict)  # sub case id -> reason code

    def complete(self) -> bool:
        """Every message the design allows has arrived (forbidden ones may still come)."""
        return all(
            case.expected() <= self.received.get(case.id, set()) for case in SUB_CASES
        ) and all(case.id in self.delivered for case in PUB_CASES if case.allowed)


@pytest.fixture(scope="module", params=["mosquitto", "nats"])
def probe_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FixtureBroker]:
    """This module's own broker of each engine: the probe's retained messages stay here."""
    kind = FixtureBroker if request.param == "mosquitto" else FixtureCluster
    with kind(tmp_path_factory.mktemp(f"probe-{request.param}"), clouds=(CLOUD, WATCH)) as broker:
        for device in DEVICES:
            broker.add_device(device)
        yield broker  # type: ignore[misc]


async def _collect(
    client: aiomqtt.Client, sink: list[aiomqtt.Message], arrived: asyncio.Event
) -> None:
    async for message in client.messages:
        sink.append(message)
        arrived.set()


def _sub_properties(identifier: int) -> Properties:
    properties = Properties(PacketTypes.SUBSCRIBE)
    properties.SubscriptionIdentifier = identifier
    return properties


def _code(code: Any) -> int:
    return int(code.value) if isinstance(code, ReasonCode) else int(code)


def _on_node(broker: FixtureBroker, username: str, node: int) -> aiomqtt.Client:
    """A client of ``username``; on NATS to ``node`` (the cluster's nodes in turn)."""
    if broker.engine == "nats":
        return broker.client(username, node=node)  # type: ignore[call-arg]
    return broker.client(username)


async def _run_probe(broker: FixtureBroker) -> ProbeResult:
    result = ProbeResult(engine=broker.engine)
    v5 = broker.mqtt_protocol == 5
    inbox: dict[str, list[aiomqtt.Message]] = {name: [] for name in (*DEVICES, WATCH)}
    async with (
        _on_node(broker, CLOUD, 0) as cloud,
        _on_node(broker, WATCH, 1) as watch,
        _on_node(broker, DEVICES[0], 0) as a,
        _on_node(broker, DEVICES[1], 1) as b,
        _on_node(broker, DEVICES[2], 2) as c,
    ):
        devices = dict(zip(DEVICES, (a, b, c), strict=True))
        clients = {**devices, WATCH: watch}
        arrived = asyncio.Event()
        collectors = [
            asyncio.create_task(_collect(client, inbox[name], arrived), name=f"collect-{name}")
            for name, client in clients.items()
        ]
        try:
            for topic in TOPICS:
                await cloud.publish(topic, f"retained:{topic}".encode(), qos=1, retain=True)
            by_sub_id: dict[tuple[str, int], SubCase] = {}
            for number, case in enumerate(SUB_CASES, start=1):
                by_sub_id[case.device, number] = case
                (code,) = await devices[case.device].subscribe(
                    case.filter, qos=1, properties=_sub_properties(number) if v5 else None
                )
                result.suback[case.id] = _code(code)
            await watch.subscribe("entitle/v1/#", qos=1)

            for topic in TOPICS:
                await cloud.publish(topic, f"live:{topic}".encode(), qos=1)
            pubacks = {device: record_pubacks(client) for device, client in devices.items()}
            for case in PUB_CASES:
                await devices[case.device].publish(
                    case.topic, f"{case.id}".encode(), qos=1, retain=True
                )
            for device, codes in pubacks.items():
                cases = [case for case in PUB_CASES if case.device == device]
                assert len(codes) == len(cases), "a PUBACK is missing"
                result.puback.update(
                    (case.id, _code(rc)) for case, rc in zip(cases, codes, strict=True)
                )

            # One wait: until every expected message is in, then a grace period for
            # anything forbidden that might still be on its way.
            async with asyncio.timeout(COLLECT_TIMEOUT_S):
                while True:
                    arrived.clear()
                    if _tally(result, inbox, by_sub_id).complete():
                        break
                    await arrived.wait()
            await asyncio.sleep(GRACE_S)
        finally:
            await cancel_and_wait(collectors)
    return _tally(result, inbox, by_sub_id)


def _tally(
    result: ProbeResult,
    inbox: dict[str, list[aiomqtt.Message]],
    by_sub_id: dict[tuple[str, int], SubCase],
) -> ProbeResult:
    result.received = {case.id: set() for case in SUB_CASES}
    for device in DEVICES:
        for message in inbox[device]:
            kind = message.payload.decode().partition(":")[0]  # type: ignore[union-attr]
            topic = message.topic.value
            if message.properties is None:  # MQTT 3.1.1: told by topic, not identifier
                for case in SUB_CASES:
                    if case.device == device and topic_matches_sub(case.filter, topic):
                        result.received[case.id].add((kind, topic))
                continue
            for number in message.properties.SubscriptionIdentifier:
                result.received[by_sub_id[device, number].id].add((kind, topic))
    pub_ids = {case.id for case in PUB_CASES}
    result.delivered = {
        payload
        for message in inbox[WATCH]
        if (payload := message.payload.decode()) in pub_ids  # type: ignore[union-attr]
    }
    return result


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def probe(probe_broker: FixtureBroker) -> AsyncIterator[ProbeResult]:
    """Run every probe once for the whole module."""
    yield await _run_probe(probe_broker)


@pytest.mark.parametrize("case", SUB_CASES, ids=[case.id for case in SUB_CASES])
def test_subscription_delivers_only_own_topics(probe: ProbeResult, case: SubCase) -> None:
    # refused at SUBSCRIBE (the dynamic-security plugin; NATS's permissions), not
    # granted and starved
    refused = NOT_AUTHORIZED if probe.engine == "mosquitto" else SUBACK_FAILURE_311
    assert probe.suback[case.id] == (1 if case.granted else refused)
    got = probe.received[case.id]
    foreign = {(kind, t) for kind, t in got if not _readable(case.device, t)}
    assert not foreign, f"{case.device} read another's topics through {case.filter!r}"
    if probe.engine == "mosquitto" or case.granted:
        assert got == case.expected()
    # on 3.1.1 a refused wildcard also "matches" the device's own topics, which
    # arrived through its literal subscriptions: only foreign ones count there


@pytest.mark.parametrize("case", PUB_CASES, ids=[case.id for case in PUB_CASES])
def test_publish_reaches_the_cloud_only_on_own_write_topics(
    probe: ProbeResult, case: PubCase
) -> None:
    assert (case.id in probe.delivered) is case.allowed
    if case.allowed:
        assert probe.puback[case.id] < 0x80
    elif probe.engine == "mosquitto":
        assert probe.puback[case.id] == NOT_AUTHORIZED
    # NATS acknowledges a forbidden publish and drops it: that nothing arrived is
    # the whole check there


def test_probe_covers_the_topic_table() -> None:
    """Every channel of every other device, the keys topic and each wildcard."""
    sub_ids = {case.id for case in SUB_CASES}
    pub_ids = {case.id for case in PUB_CASES}
    for device in DEVICES:
        for other in DEVICES:
            for channel in CHANNELS:
                assert f"{device}-sub-{other}-{_slug(channel)}" in sub_ids
                assert f"{device}-pub-{other}-{_slug(channel)}" in pub_ids
        assert f"{device}-pub-keys" in pub_ids
        assert {f"{device}-sub-{name}" for name in WILDCARDS} <= sub_ids


# --- session takeover -------------------------------------------------------------------


def _persistent(
    broker: FixtureBroker, username: str, *, identifier: str, protocol: aiomqtt.ProtocolVersion
) -> aiomqtt.Client:
    """A client asking to resume a stored session (clean start off, session kept)."""
    if protocol == aiomqtt.ProtocolVersion.V5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300
        return broker.client(
            username, identifier=identifier, clean_start=False, properties=properties
        )
    return broker.client(username, identifier=identifier, protocol=protocol, clean_session=False)


@pytest.mark.parametrize(
    "protocol",
    [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311],
    ids=["mqtt5", "mqtt311"],
)
async def test_reused_client_id_cannot_resume_an_offline_devices_session(
    probe_broker: FixtureBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    """test_broker_acl covers a victim that is online; here it is offline with a
    persistent session holding a queued command, the message a thief would want."""
    if probe_broker.mqtt_protocol == 4 and protocol == aiomqtt.ProtocolVersion.V5:
        pytest.skip("NATS speaks MQTT 3.1.1 only")
    suffix = "5" if protocol == aiomqtt.ProtocolVersion.V5 else "4"
    victim, thief = f"victim-{suffix}", f"thief-{suffix}"
    probe_broker.add_device(victim)
    probe_broker.add_device(thief)
    async with _persistent(probe_broker, victim, identifier=victim, protocol=protocol) as v:
        await subscribe(v, device_topic(victim, "cmd"))
    async with probe_broker.client(CLOUD) as cloud:
        await cloud.publish(device_topic(victim, "cmd"), b"queued for victim", qos=1)
        # the thief's login is pinned to its own client id: refused before any session
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with _persistent(probe_broker, thief, identifier=victim, protocol=protocol):
                pass
        code = refused.value.rc
        assert code is not None and _code(code) in (NOT_AUTHORIZED, 5)  # 3.1.1: 5
    async with _persistent(probe_broker, victim, identifier=victim, protocol=protocol) as v:
        async with asyncio.timeout(3):
            message = await anext(aiter(v.messages))
    assert (message.topic.value, message.payload) == (
        device_topic(victim, "cmd"),
        b"queued for victim",
    )
