"""verify_token on hostile input: only typed UntrustedDataError, never a false accept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import UntrustedDataError
from protocol.keyset import KeySet
from protocol.token import AUDIENCE, Claims, verify_token
from tests.protocol.cose_forge import DELETE, DEVICE_ID, NOW, claims_map, kid_of, sign1


@pytest.fixture(scope="module")
def verify(keyset: KeySet) -> Callable[[bytes], Claims]:
    def run(data: bytes) -> Claims:
        return verify_token(data, key_for=keyset.token_key, device_id=DEVICE_ID, now=NOW)

    return run


# --- arbitrary bytes -----------------------------------------------------------------


@given(data=st.binary(max_size=1024))
def test_arbitrary_bytes_are_refused_with_a_typed_error(
    verify: Callable[[bytes], Claims], data: bytes
) -> None:
    with pytest.raises(UntrustedDataError):
        verify(data)


@given(tail=st.binary(max_size=300))
def test_arbitrary_bytes_after_a_cose_prefix(
    verify: Callable[[bytes], Claims], token: bytes, tail: bytes
) -> None:
    """Start like a real token (tag, array, protected header) so the fuzz reaches deeper."""
    with pytest.raises(UntrustedDataError):
        verify(token[:20] + tail)


# --- every single-bit flip of a valid token ------------------------------------------


def test_every_single_bit_flip_is_refused(verify: Callable[[bytes], Claims], token: bytes) -> None:
    assert verify(token).sub == DEVICE_ID
    accepted = []
    for bit in range(len(token) * 8):
        flipped = bytearray(token)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            verify(bytes(flipped))
        except UntrustedDataError:
            continue
        accepted.append(bit)  # any other exception propagates and fails the test
    assert accepted == []


def test_every_single_byte_deletion_is_refused(
    verify: Callable[[bytes], Claims], token: bytes
) -> None:
    for i in range(len(token)):
        with pytest.raises(UntrustedDataError):
            verify(token[:i] + token[i + 1 :])


# --- validly signed, structurally hostile --------------------------------------------

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
KEYS = st.one_of(
    st.integers(-8, 8), st.text(max_size=6), st.binary(max_size=4), st.booleans(), st.none()
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
LABELS = st.sampled_from([1, 3, 4, 99, "x"])
CLAIM_NAMES = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "cti",
    "ver",
    "epoch",
    "inst",
    "ent",
    "crit",
    "x-extra",
]


@st.composite
def hostile_tokens(draw: st.DrawFn, signer: Ed25519PrivateKey) -> tuple[bytes, dict[Any, Any]]:
    """A COSE_Sign1 validly signed by ``signer`` with fuzzed headers and claims."""
    kid = kid_of(signer)
    protected = draw(
        st.fixed_dictionaries(
            {},
            optional={
                1: st.one_of(st.just(-8), VALUES),
                2: st.one_of(st.lists(LABELS | VALUES, min_size=1, max_size=3), VALUES),
                3: VALUES,
                4: st.one_of(st.just(kid), VALUES),
                99: VALUES,
            },
        )
    )
    unprotected = draw(
        st.fixed_dictionaries(
            {}, optional={1: VALUES, 2: VALUES, 4: st.one_of(st.just(kid), VALUES)}
        )
    )
    overrides = draw(
        st.dictionaries(
            st.sampled_from(CLAIM_NAMES), st.one_of(st.just(DELETE), VALUES), max_size=4
        )
    )
    if draw(st.booleans()):
        claim_labels = st.sampled_from(["ver", "ent", "inst", "x-extra", 4]) | VALUES
        overrides["crit"] = draw(st.lists(claim_labels, max_size=3))
    raw_claims = claims_map(**overrides)
    payload = cbor2.dumps(raw_claims)
    return sign1(protected, unprotected, payload, signer), protected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validly_signed_hostile_tokens(
    verify: Callable[[bytes], Claims], token_signer: Ed25519PrivateKey, data: st.DataObject
) -> None:
    token, protected = data.draw(hostile_tokens(token_signer))
    try:
        claims = verify(token)
    except UntrustedDataError:
        return
    # Accepted: then it really is a well-formed EdDSA token for this device, now.
    alg = protected[1]
    assert type(alg) is int and alg == -8
    assert all(label in (1, 2, 3, 4) for label in protected.get(2, []))
    assert claims.sub == DEVICE_ID and claims.iat is not None
    assert claims.aud in (None, AUDIENCE)
    assert (claims.nbf if claims.nbf is not None else claims.iat) - 300 <= NOW < claims.exp
