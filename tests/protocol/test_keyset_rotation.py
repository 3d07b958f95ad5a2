"""Key sets: trusting a root, threshold rotation (TUF root rule), and their limits."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import (
    BadAlgorithm,
    BadStructure,
    KeySetError,
    ThresholdNotMet,
    TooManyRotations,
    UnknownKey,
    VersionNotNext,
)
from protocol.keys import key_id, public_bytes
from protocol.keyset import (
    MAX_KEYS,
    MAX_ROTATIONS,
    KeySet,
    apply_rotations,
    decode_keyset_message,
    sign_keyset,
    trust_root,
)
from protocol.token import verify_token
from tests.protocol.cose_forge import (
    DEVICE_ID,
    NOW,
    claims_map,
    keyset_entries,
    kid_of,
    private_key,
    sign_keyset_payload,
    token_with_claims,
)


def roots(version: int) -> list[Ed25519PrivateKey]:
    """The three root keys of version ``version`` (v1's are the conftest root_signers)."""
    return [private_key(f"root-v{version}-{i}") for i in range(3)]


def version(n: int, *, threshold: int = 2, epoch: int = 0) -> KeySet:
    """Key set v``n``: 2-of-3 of its own root keys, token key ``token-n``."""
    return KeySet.create(
        version=n,
        threshold=threshold,
        root=[public_bytes(k) for k in roots(n)],
        token=[public_bytes(private_key(f"token-{n}"))],
        epoch=epoch,
    )


def rotation(n: int, **kwargs: Any) -> bytes:
    """v``n`` signed by two root keys of v``n-1`` and two of its own."""
    return sign_keyset(version(n, **kwargs), [*roots(n - 1)[:2], *roots(n)[:2]])


def test_fixture_keyset_is_version_1(keyset: KeySet) -> None:
    assert keyset == version(1)


# --- trust_root -----------------------------------------------------------------


def test_trust_root_meets_its_own_threshold() -> None:
    assert trust_root(sign_keyset(version(1), roots(1)[:2])) == version(1)


def test_trust_root_below_threshold() -> None:
    with pytest.raises(ThresholdNotMet):
        trust_root(sign_keyset(version(1), roots(1)[:1]))


def test_duplicate_signatures_by_one_kid_count_once() -> None:
    """The same root key signing twice is one signature, not a fake 2-of-3."""
    with pytest.raises(ThresholdNotMet):
        trust_root(sign_keyset(version(1), [roots(1)[0], roots(1)[0], roots(1)[0]]))


def test_signature_under_a_borrowed_kid_does_not_count() -> None:
    """Root 0 signs twice, once claiming root 1's kid: that second one is invalid."""
    ks = version(1)
    k0, k1 = roots(1)[:2]
    payload = cbor2.dumps(ks.to_cbor(), canonical=True)
    body_protected = cbor2.dumps({3: "application/entitle-keyset+cbor"})
    sigs = []
    for kid in (kid_of(k0), kid_of(k1)):
        protected = cbor2.dumps({1: -8, 4: kid})
        tbs = cbor2.dumps(["Signature", body_protected, protected, b"", payload])
        sigs.append([protected, {}, k0.sign(tbs)])
    with pytest.raises(ThresholdNotMet):
        trust_root(cbor2.dumps(cbor2.CBORTag(98, [body_protected, {}, payload, sigs])))


def test_token_key_cannot_sign_key_sets() -> None:
    """Roles are split: the online token key counts for nothing in a key set."""
    with pytest.raises(ThresholdNotMet):
        trust_root(sign_keyset(version(1), [roots(1)[0], private_key("token-1")]))


def test_trust_root_refuses_bad_algorithm() -> None:
    ks = version(1)
    payload = cbor2.dumps(ks.to_cbor(), canonical=True)
    body_protected = cbor2.dumps({3: "application/entitle-keyset+cbor"})
    sigs = []
    for signer in roots(1)[:2]:
        protected = cbor2.dumps({1: -7, 4: kid_of(signer)})
        tbs = cbor2.dumps(["Signature", body_protected, protected, b"", payload])
        sigs.append([protected, {}, signer.sign(tbs)])
    with pytest.raises(BadAlgorithm):
        trust_root(cbor2.dumps(cbor2.CBORTag(98, [body_protected, {}, payload, sigs])))


# --- rotation -----------------------------------------------------------------------


def test_rotation_signed_by_old_and_new_thresholds(keyset: KeySet) -> None:
    assert apply_rotations(keyset, [rotation(2)]) == version(2)


def test_rotation_signed_only_by_new_keys(keyset: KeySet) -> None:
    with pytest.raises(ThresholdNotMet, match="root v1"):
        apply_rotations(keyset, [sign_keyset(version(2), roots(2))])


def test_rotation_signed_only_by_old_keys(keyset: KeySet) -> None:
    with pytest.raises(ThresholdNotMet, match="its own root keys"):
        apply_rotations(keyset, [sign_keyset(version(2), roots(1))])


def test_rotation_one_old_key_short(keyset: KeySet) -> None:
    with pytest.raises(ThresholdNotMet):
        apply_rotations(keyset, [sign_keyset(version(2), [roots(1)[0], *roots(2)])])


def test_rotation_skipping_a_version(keyset: KeySet) -> None:
    data = sign_keyset(version(3), [*roots(1), *roots(3)])
    with pytest.raises(VersionNotNext):
        apply_rotations(keyset, [data])


def test_chain_in_one_message(keyset: KeySet) -> None:
    assert apply_rotations(keyset, [rotation(2), rotation(3)]) == version(3)


def test_chain_of_max_rotations(keyset: KeySet) -> None:
    chain = [rotation(n) for n in range(2, 2 + MAX_ROTATIONS)]
    assert apply_rotations(keyset, chain).version == 1 + MAX_ROTATIONS


def test_chain_longer_than_max_rotations(keyset: KeySet) -> None:
    chain = [rotation(n) for n in range(2, 3 + MAX_ROTATIONS)]
    with pytest.raises(TooManyRotations):
        apply_rotations(keyset, chain)


def test_chain_out_of_order(keyset: KeySet) -> None:
    with pytest.raises(VersionNotNext):
        apply_rotations(keyset, [rotation(3), rotation(2)])


def test_already_seen_versions_are_skipped(keyset: KeySet) -> None:
    """A retained message seen again (v1, v2) after v2 was applied changes nothing."""
    v1 = sign_keyset(version(1), roots(1)[:2])
    assert apply_rotations(keyset, [v1]) is keyset
    v2 = apply_rotations(keyset, [rotation(2)])
    assert apply_rotations(v2, [v1, rotation(2)]) is v2
    assert apply_rotations(v2, [v1, rotation(2), rotation(3)]) == version(3)


def test_chain_is_all_or_nothing(keyset: KeySet) -> None:
    bad_v3 = sign_keyset(version(3), roots(3))  # not signed by v2's roots
    with pytest.raises(ThresholdNotMet):
        apply_rotations(keyset, [rotation(2), bad_v3])


def test_epoch_may_advance_but_not_go_back(keyset: KeySet) -> None:
    v2 = apply_rotations(keyset, [rotation(2, epoch=1)])
    assert v2.epoch == 1
    with pytest.raises(KeySetError, match="epoch"):
        apply_rotations(v2, [rotation(3, epoch=0)])


def test_rotated_token_key_replaces_the_old_one(keyset: KeySet) -> None:
    v2 = apply_rotations(keyset, [rotation(2)])
    new_token = token_with_claims(claims_map(), private_key("token-2"))
    old_token = token_with_claims(claims_map(), private_key("token-1"))
    assert (
        verify_token(new_token, key_for=v2.token_key, device_id=DEVICE_ID, now=NOW).sub == DEVICE_ID
    )
    with pytest.raises(UnknownKey):
        verify_token(old_token, key_for=v2.token_key, device_id=DEVICE_ID, now=NOW)


@settings(max_examples=40, deadline=None)
@given(
    old=st.lists(st.integers(0, 2), max_size=4),
    new=st.lists(st.integers(0, 2), max_size=4),
)
def test_rotation_accepted_iff_both_thresholds_met(old: list[int], new: list[int]) -> None:
    """Any multiset of old and new root signers: accepted iff 2 distinct of each."""
    signers = [roots(1)[i] for i in old] + [roots(2)[i] for i in new]
    if not signers:
        return
    data = sign_keyset(version(2), signers)
    if len(set(old)) >= 2 and len(set(new)) >= 2:
        assert apply_rotations(version(1), [data]) == version(2)
    else:
        with pytest.raises(ThresholdNotMet):
            apply_rotations(version(1), [data])


# --- key-set shape ----------------------------------------------------------------------


def test_kid_not_matching_its_key() -> None:
    x = public_bytes(roots(1)[0])
    with pytest.raises(KeySetError, match="does not match"):
        KeySet(version=1, threshold=1, root={b"\x00" * 8: x}, token={key_id(x): x})


def test_kid_not_matching_its_key_in_a_signed_key_set() -> None:
    k0 = roots(1)[0]
    entry = {"kid": kid_of(roots(1)[1]), "x": public_bytes(k0)}
    payload = {"v": 1, "threshold": 1, "root": [entry], "token": keyset_entries([public_bytes(k0)])}
    with pytest.raises(KeySetError, match="does not match"):
        trust_root(sign_keyset_payload(payload, [k0]))


def test_duplicate_kid_in_a_signed_key_set() -> None:
    k0 = roots(1)[0]
    entries = keyset_entries([public_bytes(k0)]) * 2
    payload = {"v": 1, "threshold": 1, "root": entries, "token": keyset_entries([public_bytes(k0)])}
    with pytest.raises(KeySetError, match="duplicate"):
        trust_root(sign_keyset_payload(payload, [k0]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", "1"),
        ("v", True),
        ("threshold", None),
        ("epoch", 1.0),
        ("root", {}),
        ("token", "k"),
        ("root", [b"kid"]),
        ("root", [{"x": b"\x00" * 32}]),
    ],
    ids=repr,
)
def test_ill_formed_key_set_payload(field: str, value: Any) -> None:
    k0 = roots(1)[0]
    payload: dict[str, Any] = {
        "v": 1,
        "threshold": 1,
        "root": keyset_entries([public_bytes(k0)]),
        "token": keyset_entries([public_bytes(k0)]),
    }
    payload[field] = value
    with pytest.raises(BadStructure):
        trust_root(sign_keyset_payload(payload, [k0]))


def test_too_many_keys() -> None:
    k0 = roots(1)[0]
    many = [public_bytes(private_key(f"many-{i}")) for i in range(MAX_KEYS + 1)]
    payload = {
        "v": 1,
        "threshold": 1,
        "root": keyset_entries(many),
        "token": keyset_entries([public_bytes(k0)]),
    }
    with pytest.raises(BadStructure):
        trust_root(sign_keyset_payload(payload, [k0]))


@pytest.mark.parametrize(
    ("version_", "threshold", "epoch"), [(0, 1, 0), (1, 0, 0), (1, 4, 0), (1, 1, -1)], ids=repr
)
def test_key_set_bounds(version_: int, threshold: int, epoch: int) -> None:
    with pytest.raises(KeySetError):
        KeySet.create(
            version=version_,
            threshold=threshold,
            root=[public_bytes(k) for k in roots(1)],
            token=[public_bytes(private_key("token-1"))],
            epoch=epoch,
        )


def test_key_set_needs_a_token_key() -> None:
    with pytest.raises(KeySetError):
        KeySet.create(version=1, threshold=1, root=[public_bytes(roots(1)[0])], token=[])


def test_too_many_signatures() -> None:
    with pytest.raises(KeySetError):
        trust_root(sign_keyset(version(1), roots(1)[:1] * (2 * MAX_KEYS + 1)))


def test_unknown_token_kid(keyset: KeySet) -> None:
    with pytest.raises(UnknownKey):
        keyset.token_key(b"\x00" * 8)
    with pytest.raises(UnknownKey):  # a root key is not a token key
        keyset.token_key(kid_of(roots(1)[0]))


def test_to_json_lists_kids(keyset: KeySet) -> None:
    view = keyset.to_json()
    assert view["version"] == 1 and view["threshold"] == 2
    assert view["root"] == sorted(kid_of(k).hex() for k in roots(1))


# --- key-set messages ---------------------------------------------------------------


def test_message_with_one_key_set() -> None:
    data = rotation(2)
    assert decode_keyset_message(data) == [data]


def test_message_with_a_chain() -> None:
    chain = [rotation(2), rotation(3)]
    assert decode_keyset_message(cbor2.dumps(chain)) == chain


def test_message_chain_too_long() -> None:
    chain = [rotation(n) for n in range(2, 3 + MAX_ROTATIONS)]
    with pytest.raises(TooManyRotations):
        decode_keyset_message(cbor2.dumps(chain))


def test_message_chain_of_non_bytes() -> None:
    with pytest.raises(BadStructure):
        decode_keyset_message(cbor2.dumps([rotation(2), 5]))


def test_message_over_size_limit() -> None:
    with pytest.raises(KeySetError):
        decode_keyset_message(b"\x00" * (64 * 1024 * (MAX_ROTATIONS + 1) + 1))
