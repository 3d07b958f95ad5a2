"""Small-order Ed25519 keys: refused at every door, and why the check is load-bearing."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.cose import decode_sign1, verify_sign1
from protocol.errors import BadKey
from protocol.keys import check_public_key, key_id, load_public_key, public_bytes
from protocol.keyset import KeySet, apply_rotations, trust_root
from protocol.token import parse_claims, verify_token
from tests.protocol.cose_forge import (
    DEVICE_ID,
    FORGED_FOR_IDENTITY,
    IDENTITY,
    NOW,
    SMALL_ORDER,
    SMALL_ORDER_VECTOR,
    claims_map,
    keyset_entries,
    private_key,
    sign_keyset_payload,
)

VECTOR = SMALL_ORDER_VECTOR
FORGED = FORGED_FOR_IDENTITY
_P = 2**255 - 19


def test_vector_lists_the_eight_points() -> None:
    assert len(SMALL_ORDER) == 8
    assert sorted(k["order"] for k in VECTOR["keys"]) == [1, 2, 4, 4, 8, 8, 8, 8]
    assert VECTOR["keys"][0]["order"] == 1


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_check_public_key_refuses(raw: bytes) -> None:
    with pytest.raises(BadKey, match="small order"):
        check_public_key(raw)
    with pytest.raises(BadKey):
        load_public_key(raw)


@pytest.mark.parametrize("y", [0, 1, _P - 1])
def test_non_canonical_encodings_of_small_order_points_refused(y: int) -> None:
    """y + p (when it still fits in 255 bits) names the same point: refused as non-canonical."""
    if y + _P < 2**255:
        with pytest.raises(BadKey, match="non-canonical"):
            check_public_key((y + _P).to_bytes(32, "little"))
    with pytest.raises(BadKey):  # and with the sign bit set ("-0" for x = 0)
        check_public_key((y | 1 << 255).to_bytes(32, "little"))


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x01" * 31, b"\x01" * 33, "01" * 32, bytearray(32)],
    ids=["empty", "31", "33", "text", "bytearray"],
)
def test_wrong_shape_refused(raw: bytes) -> None:
    with pytest.raises(BadKey):
        check_public_key(raw)


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_keyset_create_refuses_as_token_key(
    raw: bytes, root_signers: list[Ed25519PrivateKey]
) -> None:
    with pytest.raises(BadKey):
        KeySet.create(version=1, threshold=1, root=[public_bytes(root_signers[0])], token=[raw])


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_keyset_create_refuses_as_root_key(raw: bytes, token_signer: Ed25519PrivateKey) -> None:
    with pytest.raises(BadKey):
        KeySet.create(version=1, threshold=1, root=[raw], token=[public_bytes(token_signer)])


def _rotation_with(
    raw: bytes, *, role: str, keyset: KeySet, signers: list[Ed25519PrivateKey]
) -> bytes:
    """v2 listing ``raw`` in ``role``, signed by every old root key and the new good root key."""
    new_root = private_key("root-v2-0")
    roots = [public_bytes(new_root)] + ([raw] if role == "root" else [])
    tokens = [public_bytes(private_key("token-2"))] + ([raw] if role == "token" else [])
    payload = {
        "v": keyset.version + 1,
        "epoch": keyset.epoch,
        "threshold": 1,
        "root": keyset_entries(roots),
        "token": keyset_entries(tokens),
    }
    return sign_keyset_payload(payload, [*signers, new_root])


@pytest.mark.parametrize("role", ["root", "token"])
@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_apply_rotations_refuses(
    raw: bytes, role: str, keyset: KeySet, root_signers: list[Ed25519PrivateKey]
) -> None:
    data = _rotation_with(raw, role=role, keyset=keyset, signers=root_signers)
    with pytest.raises(BadKey):
        apply_rotations(keyset, [data])


def test_rotation_control_without_small_order_key_is_accepted(
    keyset: KeySet, root_signers: list[Ed25519PrivateKey]
) -> None:
    """Same builder, no bad key: accepted, so BadKey above is the small-order check."""
    new_root = private_key("root-v2-0")
    payload = {
        "v": 2,
        "epoch": 0,
        "threshold": 1,
        "root": keyset_entries([public_bytes(new_root)]),
        "token": keyset_entries([public_bytes(private_key("token-2"))]),
    }
    rotated = apply_rotations(keyset, [sign_keyset_payload(payload, [*root_signers, new_root])])
    assert rotated.version == 2


@pytest.mark.parametrize("raw", SMALL_ORDER)
def test_trust_root_refuses(raw: bytes, root_signers: list[Ed25519PrivateKey]) -> None:
    payload = {
        "v": 1,
        "threshold": 1,
        "root": keyset_entries([public_bytes(root_signers[0]), raw]),
        "token": keyset_entries([public_bytes(root_signers[1])]),
    }
    with pytest.raises(BadKey):
        trust_root(sign_keyset_payload(payload, [root_signers[0]]))


# --- why the check matters ---------------------------------------------------------


def test_without_our_check_cryptography_accepts_a_forged_signature() -> None:
    """The identity key "verifies" identity||zeros for any message under `cryptography`."""
    identity = Ed25519PublicKey.from_public_bytes(IDENTITY)
    for message in (b"", b"any message", b"\x00" * 1000):
        identity.verify(FORGED, message)  # no InvalidSignature: this is the trap


def test_without_our_check_a_forged_token_would_be_accepted() -> None:
    """A token nobody signed passes the COSE layer if the identity key were trusted."""
    kid = key_id(IDENTITY)
    payload = cbor2.dumps(claims_map(), canonical=True)
    protected = cbor2.dumps({1: -8, 4: kid})
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, FORGED]))
    naive_key = Ed25519PublicKey.from_public_bytes(IDENTITY)
    claims = parse_claims(
        verify_sign1(decode_sign1(data, max_size=1 << 16), lambda _kid: naive_key)
    )
    assert claims.sub == DEVICE_ID  # forged entitlement, had the key not been checked
    with pytest.raises(BadKey):
        verify_token(
            data, key_for=lambda _kid: load_public_key(IDENTITY), device_id=DEVICE_ID, now=NOW
        )
