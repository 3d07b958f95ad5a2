"""Input the API once mishandled (found with schemathesis and by probing its edges).

Each was a 500, a response the schema did not describe, or a token that every
device would have refused; now each is a documented 4xx and nothing is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cloud import create_app
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from protocol.token import verify_token
from tests.cloud.harness import (
    DAY,
    Cloud,
    FakeClock,
    client,
    every_row,
    new_api_key,
    new_user,
    running,
)


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


async def test_until_must_be_written_as_an_integer(cloud: Cloud) -> None:
    """No float where an integer is meant, not even ``1767225600.0`` (JSON Schema's integer)."""
    inst = await cloud.installation()
    grants = f"/api/v1/installations/{inst}/grants"
    until = cloud.clock.now + DAY
    for bad in (float(until), until + 0.5, str(until), True):
        response = await cloud.http.post(grants, json={"feature": "remote", "until": bad})
        assert response.status_code == 422, bad
        assert [e["loc"] for e in response.json()["detail"]] == [["body", "until"]]
    assert (await cloud.http.get(f"/api/v1/installations/{inst}")).json()["grants"] == []
    response = await cloud.http.post(grants, json={"feature": "remote", "until": until})
    assert response.status_code == 200, response.text


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


def _refused(response: httpx.Response, *loc: str) -> None:
    """A 422 naming ``loc`` (FastAPI's shape: ``detail[].loc``)."""
    assert response.status_code == 422, response.text
    assert list(loc) in [e["loc"] for e in response.json()["detail"]], response.text


async def test_the_document_says_what_its_schema_cannot(cloud: Cloud) -> None:
    """JSON Schema counts ``12.0`` as an integer; the server does not, and says so."""
    spec = (await cloud.http.get("/openapi.json")).json()
    assert "never `12.0`" in spec["info"]["description"]
    months = spec["components"]["schemas"]["RenewIn"]["properties"]["months"]
    assert months["type"] == "integer"


async def test_booleans_are_json_booleans_only(cloud: Cloud) -> None:
    """``0`` and ``1`` were taken as ``false`` and ``true`` (blacklists, key rotation)."""
    inst = await cloud.installation()
    await cloud.device(inst)
    user = new_user(cloud.app, role="owner")
    company = (
        await cloud.http.post("/api/v1/companies", json={"name": "C", "payment_type": "card"})
    ).json()["id"]
    before, published = every_row(cloud.app), list(cloud.publisher.log)
    keyset = (await cloud.http.get("/api/v1/keyset")).json()
    for path, body, field in (
        (f"/api/v1/users/{user}/blacklist", {"blacklisted": 0, "reason": "r"}, "blacklisted"),
        (f"/api/v1/users/{user}/blacklist", {"blacklisted": 1, "reason": "r"}, "blacklisted"),
        (
            f"/api/v1/companies/{company}/blacklist",
            {"blacklisted": 1, "reason": "r"},
            "blacklisted",
        ),
        (
            f"/api/v1/companies/{company}/blacklist",
            {"blacklisted": "true", "reason": "r"},
            "blacklisted",
        ),
        ("/api/v1/keys/rotate", {"new_epoch": 1}, "new_epoch"),
        ("/api/v1/keys/rotate", {"new_root": "yes"}, "new_root"),
    ):
        method = "POST" if path.endswith("rotate") else "PUT"
        _refused(await cloud.http.request(method, path, json=body), "body", field)
    assert every_row(cloud.app) == before and cloud.publisher.log == published
    assert (await cloud.http.get("/api/v1/keyset")).json() == keyset


async def test_url_parameters_are_taken_as_written(cloud: Cloud) -> None:
    """Unknown, repeated or misspelt parameters were ignored or guessed at: 422 naming each.

    ``?limit=1&=`` on health/history is schemathesis' finding (an empty-named
    parameter was dropped and the request answered as if it were not there).
    """
    inst = await cloud.installation()
    device = (await cloud.device(inst))["device_id"]
    history = f"/api/v1/devices/{device}/health/history"
    assert (await cloud.http.get(history, params={"limit": 1})).status_code == 200
    for query, name in (
        ("limit=1&=", ""),
        ("limit=1&=x", ""),
        ("limt=5", "limt"),
        ("limit=1&limit=900", "limit"),
        ("limit=1.0", "limit"),
        ("limit=%2B1", "limit"),
        ("limit=%201", "limit"),
        ("limit=1_0", "limit"),
        ("limit=", "limit"),
        ("since=1e3", "since"),
    ):
        _refused(await cloud.http.get(f"{history}?{query}"), "query", name)
    # schemathesis' request had a malformed device id too: refused for the parameter first
    response = await cloud.http.get("/api/v1/devices/a%20b/health/history?limit=1&=")
    _refused(response, "query", "")
    for path, name in (("/api/v1/orders/1.0", "order_id"), ("/api/v1/users/%2B1", "user_id")):
        _refused(await cloud.http.get(path), "path", name)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_refused_unread(cloud: Cloud, declared: bool) -> None:
    """A 10 MB body was read whole and created an installation: 413 at 1 MiB, nothing stored."""
    assert cloud.state.settings.http_max_body_bytes == 1 << 20  # the default
    before = every_row(cloud.app)
    size = 2 << 20
    body = b'{"name": "' + b"x" * (size - 12) + b'"}'
    headers = {"content-type": "application/json"}
    if declared:
        response = await cloud.http.post("/api/v1/installations", content=body, headers=headers)
    else:

        async def stream() -> AsyncIterator[bytes]:
            for at in range(0, len(body), 65_536):
                yield body[at : at + 65_536]

        response = await cloud.http.post("/api/v1/installations", content=stream(), headers=headers)
        assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "over 1048576 bytes" in response.json()["detail"]
    assert every_row(cloud.app) == before


async def test_the_body_limit_is_a_setting(
    settings: CloudSettings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTITLE_HTTP_MAX_BODY_BYTES", "64")
    small = CloudSettings(**settings.model_dump(exclude={"http_max_body_bytes"}))
    assert small.http_max_body_bytes == 64
    app = create_app(
        small, publisher=PublisherSimulator(), accounts=AccountsSimulator(), clock=clock
    )
    async with running(app), client(app, new_api_key(app)) as http:
        fits = await http.post("/api/v1/installations", json={"name": "x" * 40})
        assert fits.status_code == 201, fits.text
        over = await http.post("/api/v1/installations", json={"name": "x" * 60})
        assert over.status_code == 413 and "over 64 bytes" in over.json()["detail"]
        assert len((await http.get("/api/v1/installations")).json()) == 1
