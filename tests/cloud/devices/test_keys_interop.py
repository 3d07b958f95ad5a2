"""Stock COSE libraries load the keys of ``GET /api/v1/keys`` and verify the cloud's tokens.

Each library gets the published COSE_Key maps as they come out of the
response (``Accept: application/cose-key-set``) and loads them with its own
loader; nothing here rebuilds a key by hand. cwt's time checks read the
wall clock while the cloud runs on a fake one, so they are skipped
(``no_verify=True``): only the signature and the key selection are tested.
"""

from __future__ import annotations

from typing import Any

import cbor2
import cwt
import pytest
from pycose.headers import KID
from pycose.keys import CoseKey
from pycose.messages import Sign1Message

from tests.cloud.harness import Cloud

COSE_KEY_SET = "application/cose-key-set"


async def _issued_token(cloud: Cloud) -> tuple[str, bytes]:
    """A device's token as the cloud retains it on its entitlement topic."""
    inst = await cloud.installation()
    device_id = (await cloud.device(inst, "gateway"))["device_id"]
    token = cloud.publisher.entitlement(device_id)
    assert token is not None
    return device_id, token


async def _cose_keys(cloud: Cloud) -> list[Any]:
    response = await cloud.http.get("/api/v1/keys", headers={"Accept": COSE_KEY_SET})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == COSE_KEY_SET
    assert response.headers["vary"] == "Accept"
    keys = cbor2.loads(response.content)  # a COSE_KeySet: a CBOR array of COSE_Key maps
    assert isinstance(keys, list)
    return keys


async def test_cwt_selects_the_published_key_by_kid_and_verifies_a_cloud_token(
    cloud: Cloud,
) -> None:
    device_id, token = await _issued_token(cloud)
    keys = [cwt.COSEKey.new(key) for key in await _cose_keys(cloud)]
    assert len(keys) == 2  # the token key and the root key: the kid picks one

    claims = cwt.decode(token, keys, no_verify=True)
    assert claims[2] == device_id and claims[1] == "entitle"

    # verify_kid: the token's kid must name one of the keys exactly
    payload = cwt.COSE.new(verify_kid=True).decode(token, keys)
    assert cbor2.loads(payload)[2] == device_id

    [root] = [k for k in keys if k.kid != cbor2.loads(cbor2.loads(token).value[0])[4]]
    with pytest.raises((cwt.VerifyError, ValueError)):
        cwt.decode(token, [root], no_verify=True)  # the root key does not sign tokens


async def test_pycose_loads_the_published_keys_and_verifies_a_cloud_token(cloud: Cloud) -> None:
    device_id, token = await _issued_token(cloud)
    keys = [CoseKey.from_dict(key) for key in await _cose_keys(cloud)]
    message = Sign1Message.decode(token)
    [key] = [k for k in keys if k.kid == message.phdr[KID]]
    message.key = key
    assert message.verify_signature()
    assert cbor2.loads(message.payload)[2] == device_id

    [other] = [k for k in keys if k is not key]
    message.key = other
    assert not message.verify_signature()


async def test_the_keys_are_json_unless_the_cose_key_set_is_asked_for(cloud: Cloud) -> None:
    for accept in (None, "*/*", "application/json", f"{COSE_KEY_SET};q=0, */*"):
        headers = {} if accept is None else {"Accept": accept}
        response = await cloud.http.get("/api/v1/keys", headers=headers)
        assert response.headers["content-type"] == "application/json", accept
        assert {k["entitle_role"] for k in response.json()["keys"]} == {"token", "root"}
    for accept in (COSE_KEY_SET, f"application/json;q=0.5, {COSE_KEY_SET}"):
        response = await cloud.http.get("/api/v1/keys", headers={"Accept": accept})
        assert response.headers["content-type"] == COSE_KEY_SET, accept
    roles = sorted(key["entitle_role"] for key in await _cose_keys(cloud))
    assert roles == ["root", "token"]
