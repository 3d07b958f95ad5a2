"""The refresh job and key rotation through the running app, with a fake clock."""

from __future__ import annotations

import asyncio

from protocol.keyset import apply_rotations, decode_keyset_message
from protocol.token import verify_token
from protocol.topics import KEYS_TOPIC
from tests.cloud.harness import DAY, Cloud


async def test_refresh_reissues_near_expiry_once(cloud: Cloud) -> None:
    inst = await cloud.installation()
    ids = [(await cloud.device(inst))["device_id"] for _ in range(3)]
    job = cloud.state.refresh_job
    assert (await job.run_once()).reissued == ()

    settings = cloud.state.settings
    cloud.clock.advance(settings.token_ttl_s - settings.refresh_before_s - 1)
    assert (await job.run_once()).reissued == ()  # not yet within the window
    cloud.clock.advance(2)
    report = await job.run_once()
    assert sorted(i.device_id for i in report.reissued) == sorted(ids)
    assert {i.ver for i in report.reissued} == {2}
    assert all(i.published for i in report.reissued)
    keyset = await cloud.keyset()
    for device_id in ids:
        token = cloud.publisher.entitlement(device_id)
        assert token is not None
        claims = verify_token(
            token, key_for=keyset.token_key, device_id=device_id, now=cloud.clock.now
        )
        assert claims.ver == 2 and claims.exp == cloud.clock.now + settings.token_ttl_s
    again = await job.run_once()
    assert again.reissued == () and again.republished == ()


async def test_refresh_drops_an_ended_feature_when_the_token_is_due(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    grants = f"/api/v1/installations/{inst}/grants"
    await cloud.http.post(grants, json={"feature": "voice", "until": cloud.clock.now + DAY})
    await cloud.http.post(grants, json={"feature": "remote", "until": cloud.clock.now + 90 * DAY})
    cloud.clock.advance(DAY)
    # the token's own until already stops voice on the device: no signature for that
    assert (await cloud.state.refresh_job.run_once()).reissued == ()
    settings = cloud.state.settings
    cloud.clock.advance(settings.token_ttl_s - settings.refresh_before_s - DAY + 1)
    [issued] = (await cloud.state.refresh_job.run_once()).reissued  # due: voice goes
    assert issued.device_id == device_id
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    claims = verify_token(
        token, key_for=(await cloud.keyset()).token_key, device_id=device_id, now=cloud.clock.now
    )
    assert set(claims.ent) == {"remote"}
    assert (await cloud.state.refresh_job.run_once()).reissued == ()


async def test_rotation_with_new_epoch_restarts_versions(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    v1 = await cloud.keyset()
    await cloud.http.post(
        f"/api/v1/installations/{inst}/grants", json={"feature": "app", "until": 2**40}
    )
    response = await cloud.http.post(
        "/api/v1/keys/rotate", json={"new_root": True, "new_epoch": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["version"], body["epoch"]) == (2, 1)
    [issued] = body["tokens"]
    assert (issued["device_id"], issued["epoch"], issued["ver"]) == (device_id, 1, 1)
    v2 = apply_rotations(v1, decode_keyset_message(cloud.publisher.retained[KEYS_TOPIC].payload))
    assert (v2.version, v2.epoch) == (2, 1)
    assert v2 == await cloud.keyset()
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    claims = verify_token(token, key_for=v2.token_key, device_id=device_id, now=cloud.clock.now)
    assert (claims.epoch, claims.ver, set(claims.ent)) == (1, 1, {"app"})
    assert (await cloud.state.refresh_job.run_once()).reissued == ()
    jwks = (await cloud.http.get("/api/v1/keys")).json()
    assert len(jwks["keys"]) == 2


async def test_concurrent_issues_never_share_a_version(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    service = cloud.state.service
    results = await asyncio.gather(*(service.reissue([device_id]) for _ in range(6)))
    vers = sorted(r[0].ver for r in results)
    assert vers == [2, 3, 4, 5, 6, 7]
    newest = cloud.publisher.entitlement(device_id)
    assert newest == max((r[0] for r in results), key=lambda i: i.ver).token
