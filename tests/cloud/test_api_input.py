"""Input the API once mishandled (found with schemathesis and by probing its edges).

Each was a 500, a response the schema did not describe, or a token that every
device would have refused; now each is a documented 4xx and nothing is stored.
"""

from __future__ import annotations

from typing import Any

from protocol.token import verify_token
from tests.cloud.harness import DAY, Cloud


def _is_validation_error(body: dict[str, Any]) -> bool:
    return isinstance(body["detail"], list) and all(
        {"loc", "msg", "type"} <= set(item) for item in body["detail"]
    )


async def test_offset_beyond_64_bits_is_refused_not_a_500(cloud: Cloud) -> None:
    for offset in (2**63, 2**31):
        response = await cloud.http.get("/api/v1/installations", params={"offset": offset})
        assert response.status_code == 422, response.text
    ok = await cloud.http.get("/api/v1/installations", params={"offset": 2**31 - 1})
    assert ok.status_code == 200 and ok.json() == []


async def test_until_may_be_an_integral_json_number(cloud: Cloud) -> None:
    inst = await cloud.installation()
    grants = f"/api/v1/installations/{inst}/grants"
    until = cloud.clock.now + DAY
    response = await cloud.http.post(grants, json={"feature": "remote", "until": float(until)})
    assert response.status_code == 200, response.text
    detail = (await cloud.http.get(f"/api/v1/installations/{inst}")).json()
    assert detail["grants"][0]["until"] == until
    for bad in (until + 0.5, str(until), True):
        response = await cloud.http.post(grants, json={"feature": "remote", "until": bad})
        assert response.status_code == 422, bad


async def test_nul_and_control_characters_are_refused_on_every_database(cloud: Cloud) -> None:
    inst = await cloud.installation()
    for method, url, body in (
        ("POST", "/api/v1/installations", {"name": "a\x00b"}),
        ("POST", "/api/v1/installations", {"name": "two\nlines"}),
        ("GET", "/api/v1/installations/a%00b", None),
        ("POST", "/api/v1/installations/a%00b/grants", {"feature": "x", "until": 1}),
        ("DELETE", f"/api/v1/installations/{inst}/grants/a%00b", None),
        ("POST", "/api/v1/devices", {"installation_id": "a\x00b", "kind": "gateway"}),
    ):
        response = await cloud.http.request(method, url, json=body)
        assert response.status_code == 422, (method, url, response.text)
    listed = (await cloud.http.get("/api/v1/installations")).json()
    assert [i["id"] for i in listed] == [inst]


async def test_undecodable_body_is_a_documented_400(cloud: Cloud) -> None:
    response = await cloud.http.post(
        "/api/v1/installations",
        content=b'{"name": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    spec = (await cloud.http.get("/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert "400" in operation["responses"], (method, path)


async def test_params_a_device_could_not_read_are_refused(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    before = cloud.publisher.entitlement(device_id)
    grants = f"/api/v1/installations/{inst}/grants"
    until = cloud.clock.now + DAY
    nested: Any = 1
    for _ in range(14):
        nested = [nested]
    for params, reason in (
        ({"big": 2**64}, "64 bits"),  # CBOR bignum tag: devices accept no such tag
        ({"small": -(2**64) - 1}, "64 bits"),
        ({"deep": nested}, "nesting"),  # deeper than the device's CBOR decoder goes
    ):
        response = await cloud.http.post(
            grants, json={"feature": "x", "until": until, "params": params}
        )
        assert response.status_code == 422, params
        assert _is_validation_error(response.json()) and reason in response.text
    for literal in (b"NaN", b"Infinity", b"1e999"):  # Python's JSON parser takes these
        body = b'{"feature": "x", "until": %d, "params": {"v": %s}}' % (until, literal)
        response = await cloud.http.post(
            grants, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, literal
        assert "NaN and Infinity" in response.text
    assert cloud.publisher.entitlement(device_id) == before
    assert (await cloud.http.get(f"/api/v1/installations/{inst}")).json()["grants"] == []

    ok = await cloud.http.post(
        grants, json={"feature": "x", "until": until, "params": {"n": 2**64 - 1, "d": nested[0]}}
    )
    assert ok.status_code == 200, ok.text
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    keyset = await cloud.keyset()
    claims = verify_token(token, key_for=keyset.token_key, device_id=device_id, now=until - 1)
    assert claims.ent["x"].params["n"] == 2**64 - 1


async def test_features_over_the_token_size_limit_are_refused(cloud: Cloud) -> None:
    inst = await cloud.installation()
    device_id = (await cloud.device(inst))["device_id"]
    grants = f"/api/v1/installations/{inst}/grants"
    until = cloud.clock.now + DAY
    filler = {"notes": "x" * 1900}
    for n in range(100):
        response = await cloud.http.post(
            grants, json={"feature": f"f{n}", "until": until, "params": filler}
        )
        if response.status_code != 200:
            break
    assert response.status_code == 422 and 25 < n < 40
    assert _is_validation_error(response.json()) and "a token carries at most" in response.text
    token = cloud.publisher.entitlement(device_id)
    assert token is not None and len(token) <= 64 * 1024
    keyset = await cloud.keyset()
    claims = verify_token(token, key_for=keyset.token_key, device_id=device_id, now=until - 1)
    assert len(claims.ent) == n  # the refused grant was not stored


async def test_lone_surrogates_are_a_422_not_a_500(cloud: Cloud) -> None:
    """``"\\ud800"`` is valid JSON but not valid text: echoing it back in a 422 failed."""
    inst = await cloud.installation()
    await cloud.device(inst)
    for url, body in (
        ("/api/v1/installations", b'{"name": "a\\ud800b"}'),
        (f"/api/v1/installations/{inst}/grants", b'{"feature": "x\\udc00", "until": 5}'),
        (
            f"/api/v1/installations/{inst}/grants",
            b'{"feature": "x", "until": 5, "params": {"k": "\\ud800"}}',
        ),
        (
            f"/api/v1/installations/{inst}/grants",
            b'{"feature": "x", "until": 5, "params": {"\\udc00": 1}}',
        ),
    ):
        response = await cloud.http.post(
            url, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (url, body, response.text)
        assert _is_validation_error(response.json())
    assert (await cloud.http.get(f"/api/v1/installations/{inst}")).json()["grants"] == []
