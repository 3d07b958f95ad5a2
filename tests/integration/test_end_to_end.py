"""Cloud → real Mosquitto → real agents, end to end (issue 2 must-shows 1, 2, 4, 5).

Also on the clustered engine (issue 16): a 3-node NATS cluster, MQTT 3.1.1, device
logins through the auth-callout responders.

The stack is the demo's: Mosquitto with the dynamic-security plugin (device
logins added by the cloud at run time), the FastAPI cloud on a local port
(SQLite file, or PostgreSQL when reachable), and real agents each with its own
login, store and verifier.
"""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.runtime import open_agent
from agent.session import Connection
from common.tasks import cancel_and_wait
from entitle.demo import DemoStack, running_stack
from protocol.cose import decode_sign1
from protocol.keys import key_id, public_bytes
from protocol.keyset import KeySet, sign_keyset
from protocol.token import Claims, issue_token, parse_claims
from protocol.topics import KEYS_TOPIC, device_topic
from tests.waiting import HANG_S, eventually

pytestmark = pytest.mark.usefixtures("require_mosquitto")
YEAR = 366 * 86400


@pytest.fixture(
    params=[("sqlite", "mosquitto"), ("postgresql", "mosquitto"), ("sqlite", "nats")],
    ids=["sqlite", "postgresql", "nats"],
)
async def stack(request, tmp_path):
    database, engine = request.param
    url = None
    if database == "postgresql":
        url = request.getfixturevalue("postgres_url")
    async with running_stack(devices=3, data_dir=tmp_path, database_url=url, engine=engine) as demo:
        yield demo


def _allowed(feature: str):
    return lambda agent: agent.check(feature)[0]


def _denied(feature: str):
    return lambda agent: not agent.check(feature)[0]


async def _cloud_publish(stack: DemoStack, topic: str, payload: bytes) -> None:
    """Publish as the cloud's broker identity: the ACL lets it write any device topic."""
    async with stack.ops_client() as client:
        props = None
        if stack.mqtt_protocol == 5:  # NATS: MQTT 3.1.1, no properties
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = 3600
        await client.publish(topic, payload, qos=1, retain=True, properties=props)


async def _rejections(agent, total: int) -> dict[str, int]:
    await eventually(
        lambda: sum(agent.rejects.by_reason.values()) >= total,
        what=lambda: f"{total} rejections; so far: {agent.rejects.by_reason}",
    )
    return dict(agent.rejects.by_reason)


async def test_grant_then_revoke_reaches_every_device(stack):
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    await stack.revoke("remote_access")
    await stack.wait_until(_denied("remote_access"), within=HANG_S)
    for agent in stack.agents:  # each holds exactly the cloud's newest token
        current = (await stack.api.get(f"/api/v1/devices/{agent.device_id}/entitlement")).json()
        assert base64.b64decode(current["token_b64"]) == agent.state.token


async def test_device_offline_during_revoke_refuses_on_reconnect(stack, tmp_path):
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    # a fourth device that is offline while the revoke happens
    created = (
        await stack.api.post(
            "/api/v1/devices",
            json={"installation_id": stack.installation, "kind": "camera", "device_id": "cam-late"},
        )
    ).json()
    conn = Connection(
        host="127.0.0.1",
        port=stack.broker_port,
        username=created["mqtt_username"],
        password=created["mqtt_password"],
        protocol=stack.mqtt_protocol,
        fallbacks=stack.broker_fallbacks,
    )
    late = open_agent(
        device_id="cam-late",
        data_dir=tmp_path / "late",
        connection=conn,
        root_keyset=stack.root_keyset,
    )
    task = asyncio.create_task(late.run())
    try:
        await _one(stack, late).wait_until(_allowed("remote_access"), within=HANG_S)
    finally:
        await cancel_and_wait([task])
    assert late.check("remote_access")[0] is True
    await stack.revoke("remote_access")  # cam-late is offline now
    await stack.wait_until(_denied("remote_access"), within=HANG_S)
    assert late.check("remote_access")[0] is True  # it has not heard yet
    task = asyncio.create_task(late.run())  # reconnects: the retained token is waiting
    try:
        await _one(stack, late).wait_until(_denied("remote_access"), within=HANG_S)
    finally:
        await cancel_and_wait([task])
        late.store.close()


def _one(stack: DemoStack, agent) -> DemoStack:
    return DemoStack(
        api=stack.api,
        agents=[agent],
        broker_label=stack.broker_label,
        installation=stack.installation,
        broker_port=stack.broker_port,
        cloud_password=stack.cloud_password,
        root=stack.root,
        root_keyset=stack.root_keyset,
        mqtt_protocol=stack.mqtt_protocol,
        broker_fallbacks=stack.broker_fallbacks,
    )


async def test_forged_and_replayed_tokens_are_rejected_and_agent_keeps_running(stack):
    a, b = stack.agents[0], stack.agents[1]
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    old = base64.b64decode(
        (await stack.api.get(f"/api/v1/devices/{a.device_id}/entitlement")).json()["token_b64"]
    )
    await stack.revoke("remote_access")
    await stack.wait_until(_denied("remote_access"), within=HANG_S)

    # 1. the older token (which allowed the feature) replayed by the cloud's identity
    await _cloud_publish(stack, device_topic(a.device_id, "entitlement"), old)
    # 2. A's valid token published on B's topic
    await _cloud_publish(stack, device_topic(b.device_id, "entitlement"), old)
    # 3. a token for A signed by a key nobody trusts
    stranger = Ed25519PrivateKey.generate()
    claims = parse_claims(decode_sign1(old, max_size=65536).payload)
    forged = issue_token(
        Claims(
            sub=a.device_id,
            iat=claims.iat,
            exp=claims.exp,
            cti=b"forged",
            ver=999,
            ent=claims.ent,
            epoch=claims.epoch,
        ),
        stranger,
        kid=key_id(public_bytes(stranger)),
    )
    await _cloud_publish(stack, device_topic(a.device_id, "entitlement"), forged)

    assert await _rejections(a, 2) == {"rollback": 1, "unknown_key": 1}
    assert await _rejections(b, 1) == {"wrong_subject": 1}
    assert not a.check("remote_access")[0] and not b.check("remote_access")[0]
    # still running: a fresh grant is followed
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)


async def test_key_rotation_over_mqtt(stack):
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    rotated = await stack.api.post("/api/v1/keys/rotate", json={"new_root": True})
    assert rotated.status_code == 200, rotated.text
    version = rotated.json()["version"]
    await stack.wait_until(lambda ag: ag.state.keyset.version == version, within=HANG_S)
    # the cloud re-issued under the new token key and the devices accepted it
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    kids = {decode_sign1(ag.state.token, max_size=65536).kid for ag in stack.agents}
    assert kids <= set(stack.agents[0].state.keyset.token) and len(kids) == 1

    # a key set signed only by keys the devices never trusted: rejected
    new_roots = [Ed25519PrivateKey.generate() for _ in range(2)]
    forged = KeySet.create(
        version=version + 1,
        threshold=1,
        root=[public_bytes(k) for k in new_roots],
        token=[public_bytes(new_roots[0])],
    )
    await _cloud_publish(stack, KEYS_TOPIC, sign_keyset(forged, new_roots))
    for agent in stack.agents:
        assert await _rejections(agent, 1) == {"threshold_not_met": 1}
        assert agent.state.keyset.version == version


async def test_restart_with_broker_down_and_clock_set_back_a_day(stack, tmp_path):
    import json
    import socket

    agent = stack.agents[0]
    await stack.grant("remote_access", until=int(time.time()) + YEAR)
    await stack.wait_until(_allowed("remote_access"), within=HANG_S)
    agent_dir = stack.root / f"agent-{agent.device_id}"
    creds = agent.connection
    assert creds is not None

    # restart the device with no broker reachable and its clock a day behind
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    offline = Connection(
        host="127.0.0.1",
        port=dead_port,
        username=creds.username,
        password=creds.password,
        protocol=stack.mqtt_protocol,
    )
    day_back = lambda: time.time() - 86400  # noqa: E731
    restarted = open_agent(
        device_id=agent.device_id,
        data_dir=agent_dir / "copy",
        connection=offline,
        root_keyset=stack.root_keyset,
        clock=day_back,
    )
    restarted.store.save(agent.state)  # the same persisted state, a new process
    restarted.store.close()
    restarted = open_agent(
        device_id=agent.device_id, data_dir=agent_dir / "copy", connection=offline, clock=day_back
    )
    task = asyncio.create_task(restarted.run())
    try:
        await asyncio.sleep(0.2)
        assert restarted.check("remote_access")[0] is True
        details = restarted.status_details()
        assert details["connected"] is False
        assert details["clock_setback_s"] >= 86400 - 5
        assert details["trusted_time"] >= agent.state.high_water
    finally:
        await cancel_and_wait([task])

    # once it reaches the broker it reports the set-back on its status topic
    online = Connection(
        host="127.0.0.1",
        port=stack.broker_port,
        username=creds.username,
        password=creds.password,
        protocol=stack.mqtt_protocol,
    )
    await stack.stop_agent(agent)
    reconnecting = open_agent(
        device_id=agent.device_id, data_dir=agent_dir / "copy", connection=online, clock=day_back
    )
    task = asyncio.create_task(reconnecting.run())
    try:
        async with stack.ops_client() as client:
            await client.subscribe(device_topic(agent.device_id, "status"), qos=1)
            async with asyncio.timeout(HANG_S):
                async for message in client.messages:
                    status = json.loads(message.payload)
                    if status.get("status") == "online" and status.get("clock_setback_s"):
                        break
        assert status["clock_setback_s"] >= 86400 - 5
    finally:
        await cancel_and_wait([task])
        reconnecting.store.close()
