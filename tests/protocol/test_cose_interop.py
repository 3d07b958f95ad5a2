"""Interop: standard COSE libraries verify our tokens, and we verify theirs.

pycose and cwt are independent implementations of RFC 9052; cwt's time
checks read the wall clock, so they are skipped (``no_verify=True``) and
only its signature verification is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
import cwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.messages import Sign1Message

from protocol.errors import BadAlgorithm, BadCbor, BadSignature, BadStructure
from protocol.keys import public_bytes
from protocol.keyset import KeySet
from protocol.token import Claims, verify_token
from tests.protocol.cose_forge import DEVICE_ID, NOW, claims_map, kid_of


def _seed(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _cwt_key(private: Ed25519PrivateKey, *, with_private: bool) -> Any:
    params: dict[int, Any] = {1: 1, -1: 6, -2: public_bytes(private), 3: -8, 2: kid_of(private)}
    if with_private:
        params[-4] = _seed(private)
    return cwt.COSEKey.new(params)


def _verify(data: bytes, keyset: KeySet) -> Claims:
    return verify_token(data, key_for=keyset.token_key, device_id=DEVICE_ID, now=NOW)


def _payload() -> bytes:
    return cbor2.dumps(claims_map(), canonical=True)


# --- our tokens, their verifiers ------------------------------------------------


def test_pycose_verifies_our_token(token: bytes, token_signer: Ed25519PrivateKey) -> None:
    msg = Sign1Message.decode(token)
    msg.key = OKPKey(crv="Ed25519", x=public_bytes(token_signer))
    assert msg.verify_signature()
    assert msg.phdr == {Algorithm: EdDSA, KID: kid_of(token_signer)}
    assert cbor2.loads(msg.payload)[2] == DEVICE_ID


def test_pycose_rejects_our_token_under_another_key(
    token: bytes, root_signers: list[Ed25519PrivateKey]
) -> None:
    msg = Sign1Message.decode(token)
    msg.key = OKPKey(crv="Ed25519", x=public_bytes(root_signers[0]))
    assert not msg.verify_signature()


def test_cwt_verifies_our_token(
    token: bytes, token_signer: Ed25519PrivateKey, make_claims: Callable[..., Claims]
) -> None:
    claims = cwt.decode(token, _cwt_key(token_signer, with_private=False), no_verify=True)
    assert claims == cbor2.loads(cbor2.dumps(make_claims().to_cbor()))


def test_cwt_cose_layer_verifies_our_token(token: bytes, token_signer: Ed25519PrivateKey) -> None:
    ctx = cwt.COSE.new(verify_kid=True)
    payload = ctx.decode(token, _cwt_key(token_signer, with_private=False))
    assert cbor2.loads(payload)["ver"] == 7


def test_cwt_rejects_our_token_when_tampered(token: bytes, token_signer: Ed25519PrivateKey) -> None:
    body = cbor2.loads(token).value
    body[3] = bytes(64)
    with pytest.raises(cwt.VerifyError):
        cwt.decode(
            cbor2.dumps(cbor2.CBORTag(18, body)),
            _cwt_key(token_signer, with_private=False),
            no_verify=True,
        )


# --- their tokens, our verifier -------------------------------------------------


def _pycose_token(private: Ed25519PrivateKey, phdr: dict[Any, Any], uhdr: dict[Any, Any]) -> bytes:
    msg = Sign1Message(phdr=phdr, uhdr=uhdr, payload=_payload())
    msg.key = OKPKey(crv="Ed25519", x=public_bytes(private), d=_seed(private))
    data: bytes = msg.encode(tag=True)
    return data


def test_pycose_token_kid_protected(keyset: KeySet, token_signer: Ed25519PrivateKey) -> None:
    data = _pycose_token(token_signer, {Algorithm: EdDSA, KID: kid_of(token_signer)}, {})
    assert _verify(data, keyset).sub == DEVICE_ID


def test_pycose_token_kid_unprotected(keyset: KeySet, token_signer: Ed25519PrivateKey) -> None:
    data = _pycose_token(token_signer, {Algorithm: EdDSA}, {KID: kid_of(token_signer)})
    assert _verify(data, keyset).sub == DEVICE_ID


def test_pycose_token_alg_unprotected_refused(
    keyset: KeySet, token_signer: Ed25519PrivateKey
) -> None:
    data = _pycose_token(token_signer, {KID: kid_of(token_signer)}, {Algorithm: EdDSA})
    with pytest.raises(BadAlgorithm):
        _verify(data, keyset)


def test_pycose_untagged_token_refused(token_signer: Ed25519PrivateKey) -> None:
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid_of(token_signer)}, payload=_payload())
    msg.key = OKPKey(crv="Ed25519", x=public_bytes(token_signer), d=_seed(token_signer))
    data = msg.encode(tag=False)
    with pytest.raises(BadStructure):
        verify_token(
            data, key_for=lambda kid: pytest.fail("no key lookup"), device_id=DEVICE_ID, now=NOW
        )


def test_pycose_token_signed_by_another_key(
    keyset: KeySet, token_signer: Ed25519PrivateKey, root_signers: list[Ed25519PrivateKey]
) -> None:
    """A pycose token under our kid but another key's signature: BadSignature."""
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid_of(token_signer)}, payload=_payload())
    other = root_signers[0]
    msg.key = OKPKey(crv="Ed25519", x=public_bytes(other), d=_seed(other))
    with pytest.raises(BadSignature):
        _verify(msg.encode(), keyset)


def test_cwt_cose_token(keyset: KeySet, token_signer: Ed25519PrivateKey) -> None:
    """cwt puts alg in the protected header and kid in the unprotected one."""
    ctx = cwt.COSE.new(alg_auto_inclusion=True, kid_auto_inclusion=True)
    data = ctx.encode_and_sign(_payload(), _cwt_key(token_signer, with_private=True))
    item = cbor2.loads(data)
    assert cbor2.loads(item.value[0]) == {1: -8} and item.value[1] == {4: kid_of(token_signer)}
    assert _verify(data, keyset).ver == 7


def test_cwt_claims_token(keyset: KeySet, token_signer: Ed25519PrivateKey) -> None:
    """cwt's own CWT encoder, with every time claim given (so it reads no clock)."""
    claims = claims_map(nbf=NOW - 60)
    data = cwt.encode_and_sign(claims, _cwt_key(token_signer, with_private=True))
    verified = _verify(data, keyset)
    assert (verified.sub, verified.nbf, verified.ent["remote_access"].until) == (
        DEVICE_ID,
        NOW - 60,
        NOW + 30 * 86400,
    )


def test_cwt_tagged_61_token_refused(keyset: KeySet, token_signer: Ed25519PrivateKey) -> None:
    """Our envelope is a bare COSE_Sign1 (tag 18), not one wrapped in the CWT tag."""
    data = cwt.encode_and_sign(
        claims_map(nbf=NOW), _cwt_key(token_signer, with_private=True), tagged=True
    )
    assert data[:2] == b"\xd8\x3d"
    with pytest.raises(BadCbor):
        _verify(data, keyset)
