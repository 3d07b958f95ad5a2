"""The app with its real adapters: MQTT bridge and Mosquitto accounts, on SQLite."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiomqtt

from cloud import create_app
from cloud.settings import CloudSettings
from protocol.keyset import trust_root
from protocol.token import verify_token
from protocol.topics import device_topic
from tests.broker_fixtures import FixtureBroker
from tests.cloud.harness import DAY, FakeClock, client, new_api_key, running
from tests.waiting import HANG_S


async def test_device_logs_in_with_returned_credentials_and_gets_its_grant(
    broker: FixtureBroker, tmp_path: Path
) -> None:
    clock = FakeClock()
    settings = CloudSettings(data_dir=tmp_path / "cloud", broker_url=broker.url("cloud"))
    app = create_app(settings, accounts=broker.accounts, clock=clock)
    async with running(app):
        async with client(app, new_api_key(app)) as http:
            bridge = app.state.cloud.bridge
            await bridge.wait_connected(HANG_S)
            assert (await http.get("/healthz")).json()["broker"] == "connected"
            inst = (await http.post("/api/v1/installations", json={"name": "Home"})).json()["id"]
            creds = (
                await http.post("/api/v1/devices", json={"installation_id": inst, "kind": "camera"})
            ).json()
            grant = {"feature": "video_retention", "until": clock.now + DAY, "params": {"days": 7}}
            response = await http.post(f"/api/v1/installations/{inst}/grants", json=grant)
            assert response.json()["tokens"][0]["published"] is True
            provisioned = (await http.get("/api/v1/keyset")).json()["keyset_b64"]
            keyset = trust_root(base64.b64decode(provisioned))

        device_id = creds["device_id"]
        async with aiomqtt.Client(
            broker.host,
            broker.port,
            username=creds["mqtt_username"],
            password=creds["mqtt_password"],
            identifier=device_id,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as device:
            await device.subscribe(device_topic(device_id, "entitlement"), qos=1)
            async with asyncio.timeout(HANG_S):
                message = await anext(aiter(device.messages))
    assert isinstance(message.payload, bytes)
    claims = verify_token(
        message.payload, key_for=keyset.token_key, device_id=device_id, now=clock.now
    )
    assert claims.ver == 2 and claims.ent["video_retention"].params == {"days": 7}
