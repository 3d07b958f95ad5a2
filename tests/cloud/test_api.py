"""The REST API end to end, against SQLite and PostgreSQL, with the port simulators."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from cloud.devices import queries as device_queries
from cloud.devices.rules import MAX_DEVICES, DeviceKind
from cloud.devices.tables import DeviceRow, TokenRow
from common.credentials import verify_password
from protocol.keyset import KeySet
from protocol.token import Claims, verify_token
from protocol.topics import KEYS_TOPIC
from tests.cloud.harness import DAY, Cloud


def _verify(token: bytes, keyset: KeySet, device_id: str, now: int) -> Claims:
    return verify_token(token, key_for=keyset.token_key, device_id=device_id, now=now)


async def test_grant_reaches_every_device_and_revoke_removes_it(cloud: Cloud) -> None:
    inst = await cloud.installation()
    ids = [(await cloud.device(inst, kind))["device_id"] for kind in ("gateway", "camera")]
    keyset = await cloud.keyset()
    until = cloud.clock.now + 365 * DAY

    response = await cloud.http.post(
        f"/api/v1/installations/{inst}/grants",
        json={"feature": "video_retention", "until": until, "params": {"days": 30}},
    )
    assert response.status_code == 200, response.text
    granted = {t["device_id"]: t for t in response.json()["tokens"]}
    assert set(granted) == set(ids)
    for device_id in ids:
        token = cloud.publisher.entitlement(device_id)
        assert token is not None
        claims = _verify(token, keyset, device_id, cloud.clock.now)
        assert claims.ent["video_retention"].until == until
        assert dict(claims.ent["video_retention"].params) == {"days": 30}
        assert claims.inst == inst and claims.ver == granted[device_id]["ver"] == 2
        assert granted[device_id]["published"] is True

    cloud.clock.advance(60)
    response = await cloud.http.delete(f"/api/v1/installations/{inst}/grants/video_retention")
    assert response.status_code == 200, response.text
    for item in response.json()["tokens"]:
        token = cloud.publisher.entitlement(item["device_id"])
        assert token is not None
        claims = _verify(token, keyset, item["device_id"], cloud.clock.now)
        assert "video_retention" not in claims.ent
        assert claims.ver == item["ver"] == granted[item["device_id"]]["ver"] + 1

    detail = (await cloud.http.get(f"/api/v1/installations/{inst}")).json()
    assert [g["status"] for g in detail["grants"]] == ["revoked"]
    assert {d["device_id"]: d["token"]["ver"] for d in detail["devices"]} == dict.fromkeys(ids, 3)
    again = await cloud.http.delete(f"/api/v1/installations/{inst}/grants/video_retention")
    assert again.status_code == 404


async def test_entitlement_route_and_expiry_interval(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst, "counter", device_id="counter_01"))["device_id"]
    assert device_id == "counter_01"
    body = (await cloud.http.get(f"/api/v1/devices/{device_id}/entitlement")).json()
    token = base64.b64decode(body["token_b64"])
    assert token == cloud.publisher.entitlement(device_id)
    claims = _verify(token, await cloud.keyset(), device_id, cloud.clock.now)
    assert body["claims"] == claims.to_json()
    assert claims.exp - claims.iat == cloud.state.settings.token_ttl_s
    assert claims.iss == "entitle" and claims.aud == "entitle" and claims.nbf == claims.iat
    [message] = [m for m in cloud.publisher.log if m.payload == token]
    assert message.expiry_s == cloud.state.settings.token_ttl_s
    assert cloud.publisher.retained[KEYS_TOPIC].payload == cloud.state.signer.keyset_message()


async def test_eleventh_device_is_refused_and_nothing_stored(cloud: Cloud) -> None:
    """The limit of 10 is the controllers' (one configuration file); cameras are not
    controllers and an installation takes more of them."""
    inst = await cloud.installation()
    for n in range(MAX_DEVICES):
        await cloud.device(inst, device_id=f"gw-{n}")
    published = len(cloud.publisher.log)

    response = await cloud.http.post(
        "/api/v1/devices", json={"installation_id": inst, "kind": "gateway", "device_id": "gw-x"}
    )
    assert response.status_code == 409
    assert "maximum is 10" in response.json()["detail"]
    assert "gw-x" not in cloud.accounts.passwords
    assert len(cloud.publisher.log) == published
    with cloud.state.store.transaction() as tx:
        assert device_queries.device(tx, "gw-x") is None
        assert device_queries.count_devices(tx, inst) == MAX_DEVICES
        assert tx.scalar(select(func.count()).select_from(TokenRow)) == MAX_DEVICES
    camera = await cloud.http.post(
        "/api/v1/devices", json={"installation_id": inst, "kind": "camera", "device_id": "cam-x"}
    )
    assert camera.status_code == 201, camera.text


async def test_credentials_returned_once_and_only_hash_stored(cloud: Cloud) -> None:
    inst = await cloud.installation()
    creds = await cloud.device(inst, "camera")
    assert set(creds) == {"device_id", "mqtt_username", "mqtt_password", "broker_url"}
    assert creds["mqtt_username"] == creds["device_id"]
    assert creds["broker_url"] == "mqtt://broker.example:1883"
    assert cloud.accounts.passwords[creds["device_id"]] == creds["mqtt_password"]
    with cloud.state.store.transaction() as tx:
        row = tx.get(DeviceRow, creds["device_id"])
        assert row is not None
        stored = row.mqtt_password_hash
    assert creds["mqtt_password"] not in stored
    assert verify_password(creds["mqtt_password"], stored)
    assert not verify_password("wrong", stored)
    shown = (await cloud.http.get(f"/api/v1/devices/{creds['device_id']}")).text
    assert creds["mqtt_password"] not in shown and "hash" not in shown


async def test_delete_device_removes_account_and_retained_token(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    assert cloud.publisher.entitlement(device_id) is not None
    response = await cloud.http.delete(f"/api/v1/devices/{device_id}")
    assert response.status_code == 204
    assert device_id not in cloud.accounts.passwords
    assert cloud.publisher.entitlement(device_id) is None
    assert (await cloud.http.get(f"/api/v1/devices/{device_id}")).status_code == 404
    assert (await cloud.http.delete(f"/api/v1/devices/{device_id}")).status_code == 404


async def test_validation_and_not_found(cloud: Cloud) -> None:
    inst = await cloud.installation()
    bad_ids = ["a/b", "x" * 65, "", "dev#1", "dev+", "$SYS"]
    for bad in bad_ids:
        body = {"installation_id": inst, "kind": "gateway", "device_id": bad}
        assert (await cloud.http.post("/api/v1/devices", json=body)).status_code == 422, bad
    for body in (
        {"installation_id": inst, "kind": "toaster"},
        {"installation_id": inst},
        {"installation_id": inst, "kind": "gateway", "extra": 1},
    ):
        assert (await cloud.http.post("/api/v1/devices", json=body)).status_code == 422
    unknown = {"installation_id": "inst_nope", "kind": "gateway"}
    assert (await cloud.http.post("/api/v1/devices", json=unknown)).status_code == 404
    await cloud.device(inst, device_id="dup")
    again = {"installation_id": inst, "kind": "gateway", "device_id": "dup"}
    assert (await cloud.http.post("/api/v1/devices", json=again)).status_code == 409

    grants = f"/api/v1/installations/{inst}/grants"
    for body in (
        {"feature": "x", "until": "soon"},
        {"feature": "x", "until": -1},
        {"feature": "x", "until": 1.5},
        {"feature": "a b", "until": 10},
        {"feature": "x", "until": 10, "params": {"until": 5}},
        {"feature": "x", "until": 10, "params": [1]},
    ):
        assert (await cloud.http.post(grants, json=body)).status_code == 422, body
    missing = "/api/v1/installations/inst_nope/grants"
    assert (await cloud.http.post(missing, json={"feature": "x", "until": 10})).status_code == 404
    assert (await cloud.http.get("/api/v1/installations/inst_nope")).status_code == 404
    assert (await cloud.http.get("/api/v1/devices/nope/entitlement")).status_code == 404
    assert (await cloud.http.get("/api/v1/devices/bad$id")).status_code == 422


async def test_installations_list_and_detail(cloud: Cloud) -> None:
    first = await cloud.installation("One")
    cloud.clock.advance(1)
    second = await cloud.installation("Two")
    assert first.startswith("inst_") and first != second
    listed = (await cloud.http.get("/api/v1/installations")).json()
    assert [i["id"] for i in listed] == [first, second]
    await cloud.device(second, "camera", device_id="cam-1")
    detail = (await cloud.http.get(f"/api/v1/installations/{second}")).json()
    assert detail["name"] == "Two"
    assert [d["device_id"] for d in detail["devices"]] == ["cam-1"]
    assert detail["devices"][0]["kind"] == "camera"
    assert detail["devices"][0]["token"]["ver"] == 1
    assert detail["grants"] == []


async def test_keys_jwks_and_keyset(cloud: Cloud) -> None:
    jwks = (await cloud.http.get("/api/v1/keys")).json()
    keyset = await cloud.keyset()
    roles = sorted(k["entitle_role"] for k in jwks["keys"])
    assert roles == ["root", "token"]
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "kid", "x", "use", "key_ops", "entitle_role"}
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["key_ops"]) == (
            "OKP",
            "Ed25519",
            "sig",
            ["verify"],
        )
        assert "=" not in jwk["kid"] + jwk["x"] and "d" not in jwk
        kid = base64.urlsafe_b64decode(jwk["kid"] + "==")
        x = base64.urlsafe_b64decode(jwk["x"] + "=")
        group = keyset.token if jwk["entitle_role"] == "token" else keyset.root
        assert group[kid] == x
    body = (await cloud.http.get("/api/v1/keyset")).json()
    assert (body["version"], body["epoch"]) == (1, 0)
    docs = await cloud.http.get("/docs")
    assert docs.status_code == 200
    health = (await cloud.http.get("/api/v1/healthz")).json()
    assert health == {"status": "ok", "database": "ok", "broker": "external", "keyset_version": 1}


async def test_broker_down_keeps_token_for_the_refresh_job(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    cloud.publisher.down = True
    response = await cloud.http.post(
        f"/api/v1/installations/{inst}/grants",
        json={"feature": "remote", "until": cloud.clock.now + DAY},
    )
    assert response.status_code == 200
    [token] = response.json()["tokens"]
    assert token["published"] is False and token["ver"] == 2

    cloud.publisher.down = False
    cloud.clock.advance(60)
    report = await cloud.state.refresh_job.run_once()
    assert [i.device_id for i in report.republished] == [device_id]
    assert report.reissued == ()
    retained = cloud.publisher.entitlement(device_id)
    assert retained is not None
    assert _verify(retained, await cloud.keyset(), device_id, cloud.clock.now).ver == 2
    again = await cloud.state.refresh_job.run_once()
    assert again.republished == () and again.reissued == ()


async def test_accounts_failure_stores_nothing(cloud: Cloud) -> None:
    inst = await cloud.installation()
    cloud.accounts.fail = True
    with pytest.raises(OSError, match="not writable"):
        await cloud.state.service.add_device(
            installation_id=inst, kind=DeviceKind.GATEWAY, device_id="gw-z"
        )
    with cloud.state.store.transaction() as tx:
        assert device_queries.device(tx, "gw-z") is None
        assert device_queries.current_tokens(tx, ["gw-z"]) == {}
    assert cloud.publisher.entitlement("gw-z") is None
