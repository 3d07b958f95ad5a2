"""verify_token: the round trip and every typed rejection, each in its own test.

Malformed tokens are built by hand (cose_forge) and validly signed by the
trusted token key, so each rejection below comes from the structural or
claims check named in the test, not from the signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import protocol.cbor
from protocol.errors import (
    BadAlgorithm,
    BadCbor,
    BadClaims,
    BadSignature,
    BadStructure,
    DecodeError,
    Expired,
    NotYetValid,
    TokenError,
    TooLarge,
    UnknownCriticalHeader,
    UnknownKey,
    UntrustedDataError,
    WrongAudience,
    WrongSubject,
)
from protocol.keyset import KeySet
from protocol.token import (
    DEFAULT_SKEW_S,
    MAX_TOKEN_BYTES,
    Claims,
    Feature,
    feature_allowed,
    verify_token,
    when,
)
from tests.protocol.cose_forge import (
    DELETE,
    DEVICE_ID,
    NOW,
    claims_map,
    kid_of,
    private_key,
    sign1,
    token_with_claims,
)


@pytest.fixture
def verify(keyset: KeySet) -> Callable[..., Claims]:
    """verify_token with the test key set, DEVICE_ID and NOW unless overridden."""

    def run(data: bytes, **kwargs: Any) -> Claims:
        kwargs.setdefault("device_id", DEVICE_ID)
        kwargs.setdefault("now", NOW)
        return verify_token(data, key_for=keyset.token_key, **kwargs)

    return run


@pytest.fixture
def signed(token_signer: Ed25519PrivateKey) -> Callable[..., bytes]:
    """A hand-built token over valid claims, validly signed; headers as given."""

    def build(
        protected: dict[Any, Any] | bytes, unprotected: dict[Any, Any] | None = None
    ) -> bytes:
        payload = cbor2.dumps(claims_map(), canonical=True)
        return sign1(protected, unprotected or {}, payload, token_signer)

    return build


def test_round_trip(
    verify: Callable[..., Claims], make_claims: Callable[..., Claims], token: bytes
) -> None:
    assert verify(token) == make_claims()


def test_round_trip_optional_claims_absent(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    claims = verify(make_token(iss=None, aud=None, inst=None, nbf=None, epoch=3))
    assert (claims.iss, claims.aud, claims.inst, claims.nbf, claims.epoch) == (None,) * 4 + (3,)


def test_token_layout_is_the_documented_one(token: bytes, token_signer: Ed25519PrivateKey) -> None:
    item = cbor2.loads(token)
    assert item.tag == 18
    protected, unprotected, payload, signature = item.value
    assert cbor2.loads(protected) == {1: -8, 4: kid_of(token_signer)}
    assert unprotected == {} and len(signature) == 64
    assert cbor2.loads(payload)["ent"]["video_retention"] == {"days": 30, "until": NOW + 30 * 86400}


def test_hand_built_token_verifies(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    """The forge itself is sound: a well-formed hand-built token is accepted."""
    assert verify(signed({1: -8, 4: kid_of(token_signer)})).sub == DEVICE_ID


def test_kid_in_unprotected_header_accepted(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    assert verify(signed({1: -8}, {4: kid_of(token_signer)})).sub == DEVICE_ID


# --- envelope: CBOR and COSE structure ---------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"\xd2", b"\xd2\x84", b"\xff", b"\x1c", b"\xa2\x01\x00"],
    ids=["empty", "lone-tag", "truncated-array", "break", "reserved-info", "truncated-map"],
)
def test_bad_cbor(verify: Callable[..., Claims], data: bytes) -> None:
    with pytest.raises(BadCbor):
        verify(data)


def test_trailing_bytes(verify: Callable[..., Claims], token: bytes) -> None:
    with pytest.raises(BadCbor):
        verify(token + b"\x00")


def test_not_bytes(verify: Callable[..., Claims], token: bytes) -> None:
    with pytest.raises(BadCbor):
        verify(token.hex())  # type: ignore[arg-type]


@pytest.mark.parametrize("tag", [17, 61, 98, 96, 997])
def test_wrong_tag(verify: Callable[..., Claims], token: bytes, tag: int) -> None:
    body = cbor2.loads(token).value
    with pytest.raises(DecodeError):  # BadStructure for 17/98, BadCbor for tags we never accept
        verify(cbor2.dumps(cbor2.CBORTag(tag, body)))


def test_wrong_tag_with_valid_signature_is_bad_structure(
    verify: Callable[..., Claims], token: bytes
) -> None:
    body = cbor2.loads(token).value
    with pytest.raises(BadStructure):
        verify(cbor2.dumps(cbor2.CBORTag(98, body)))


def test_untagged(verify: Callable[..., Claims], token: bytes) -> None:
    with pytest.raises(BadStructure):
        verify(cbor2.dumps(cbor2.loads(token).value))


def test_cwt_tag_61_wrapping_refused(verify: Callable[..., Claims], token: bytes) -> None:
    """RFC 8392's optional CWT tag is not our envelope: refused before cbor2 sees it."""
    with pytest.raises(BadCbor):
        verify(cbor2.dumps(cbor2.CBORTag(61, cbor2.loads(token))))


@pytest.mark.parametrize(
    "body",
    [
        [],
        [b"", {}, b""],
        [b"", {}, b"", b"", b""],
        {"a": 1},
        b"bytes",
    ],
    ids=["empty-array", "3-items", "5-items", "map", "bytes"],
)
def test_not_a_four_item_array(verify: Callable[..., Claims], body: Any) -> None:
    with pytest.raises(BadStructure):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)))


def test_detached_payload(verify: Callable[..., Claims], token_signer: Ed25519PrivateKey) -> None:
    data = sign1({1: -8, 4: kid_of(token_signer)}, {}, None, token_signer)
    with pytest.raises(BadStructure):
        verify(data)


def test_protected_header_not_bytes(verify: Callable[..., Claims], token: bytes) -> None:
    body = cbor2.loads(token).value
    body[0] = cbor2.loads(body[0])  # the map itself instead of its bstr encoding
    with pytest.raises(BadStructure):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)))


def test_protected_header_not_a_map(
    verify: Callable[..., Claims], signed: Callable[..., bytes]
) -> None:
    with pytest.raises(BadStructure):
        verify(signed(cbor2.dumps([1, -8])))


def test_protected_header_bad_cbor(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    good = cbor2.dumps({1: -8, 4: kid_of(token_signer)})
    with pytest.raises(BadCbor):
        verify(signed(good + b"\x00"))


def test_protected_header_duplicate_alg(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    """{1: -7, 1: -8}: a lax decoder keeps the last value; we refuse the map."""
    kid = kid_of(token_signer)
    raw = b"\xa3\x01\x26\x01\x27\x04\x48" + kid
    with pytest.raises(BadCbor):
        verify(signed(raw))


def test_unprotected_header_not_a_map(verify: Callable[..., Claims], token: bytes) -> None:
    body = cbor2.loads(token).value
    body[1] = []
    with pytest.raises(BadStructure):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)))


def test_signature_not_bytes(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    payload = cbor2.dumps(claims_map(), canonical=True)
    data = sign1({1: -8, 4: kid_of(token_signer)}, {}, payload, token_signer, signature="sig")  # type: ignore[arg-type]
    with pytest.raises(BadStructure):
        verify(data)


def test_kid_missing(verify: Callable[..., Claims], signed: Callable[..., bytes]) -> None:
    with pytest.raises(BadStructure):
        verify(signed({1: -8}))


def test_kid_not_bytes(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadStructure):
        verify(signed({1: -8, 4: kid_of(token_signer).hex()}))


# --- algorithm pinning ---------------------------------------------------------


@pytest.mark.parametrize(
    "alg",
    [-7, -19, -35, -36, -37, -257, 0, 8, -999, "EdDSA", b"\xf8", -8.0, True, None, [-8]],
    ids=lambda a: repr(a),
)
def test_wrong_alg(
    verify: Callable[..., Claims],
    signed: Callable[..., bytes],
    token_signer: Ed25519PrivateKey,
    alg: Any,
) -> None:
    """Only -8 passes; -19 ("Ed25519") too is refused because we never emit it."""
    with pytest.raises(BadAlgorithm):
        verify(signed({1: alg, 4: kid_of(token_signer)}))


def test_alg_only_in_unprotected_header(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadAlgorithm):
        verify(signed({4: kid_of(token_signer)}, {1: -8}))


def test_alg_in_both_headers(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadAlgorithm):
        verify(signed({1: -8, 4: kid_of(token_signer)}, {1: -8}))


def test_alg_missing(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadAlgorithm):
        verify(signed({4: kid_of(token_signer)}))


def test_empty_protected_header(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadAlgorithm):
        verify(signed(b"", {1: -8, 4: kid_of(token_signer)}))


# --- critical headers ----------------------------------------------------------


@pytest.mark.parametrize("crit", [[99], ["x-vendor"], [1, 99], [-65537]], ids=repr)
def test_unknown_critical_header(
    verify: Callable[..., Claims],
    signed: Callable[..., bytes],
    token_signer: Ed25519PrivateKey,
    crit: list[Any],
) -> None:
    header = {1: -8, 2: crit, 4: kid_of(token_signer)}
    header.update({label: 0 for label in crit if label != 1})
    with pytest.raises(UnknownCriticalHeader):
        verify(signed(header))


def test_known_critical_header_accepted(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    assert verify(signed({1: -8, 2: [1, 4], 4: kid_of(token_signer)})).sub == DEVICE_ID


@pytest.mark.parametrize(
    "crit", [[], None, 1, "alg", {1: 1}, [[1]], [{1: 2}], [b"\x01"], [1.5], [True]], ids=repr
)
def test_ill_formed_crit(
    verify: Callable[..., Claims],
    signed: Callable[..., bytes],
    token_signer: Ed25519PrivateKey,
    crit: Any,
) -> None:
    """crit is a non-empty array of int/text labels; unhashable labels must not crash."""
    with pytest.raises(BadStructure):
        verify(signed({1: -8, 2: crit, 4: kid_of(token_signer)}))


def test_crit_in_unprotected_header(
    verify: Callable[..., Claims], signed: Callable[..., bytes], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(BadStructure):
        verify(signed({1: -8, 4: kid_of(token_signer)}, {2: [4]}))


# --- key and signature ---------------------------------------------------------


def test_unknown_kid(verify: Callable[..., Claims]) -> None:
    stranger = private_key("stranger")
    with pytest.raises(UnknownKey):
        verify(token_with_claims(claims_map(), stranger))


def test_root_key_cannot_sign_tokens(
    verify: Callable[..., Claims], root_signers: list[Ed25519PrivateKey]
) -> None:
    """Roles are split: a root key's kid is not a token key."""
    with pytest.raises(UnknownKey):
        verify(token_with_claims(claims_map(), root_signers[0]))


def test_bad_signature(verify: Callable[..., Claims], token: bytes) -> None:
    body = cbor2.loads(token).value
    body[3] = bytes([body[3][0] ^ 1]) + body[3][1:]
    with pytest.raises(BadSignature):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)))


def test_signature_by_another_key_under_trusted_kid(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    payload = cbor2.dumps(claims_map(), canonical=True)
    data = sign1({1: -8, 4: kid_of(token_signer)}, {}, payload, private_key("impostor"))
    with pytest.raises(BadSignature):
        verify(data)


def test_payload_changed_after_signing(verify: Callable[..., Claims], token: bytes) -> None:
    body = cbor2.loads(token).value
    claims = cbor2.loads(body[2])
    claims["ver"] += 1
    body[2] = cbor2.dumps(claims, canonical=True)
    with pytest.raises(BadSignature):
        verify(cbor2.dumps(cbor2.CBORTag(18, body)))


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_signature_wrong_length(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey, length: int
) -> None:
    payload = cbor2.dumps(claims_map(), canonical=True)
    data = sign1(
        {1: -8, 4: kid_of(token_signer)}, {}, payload, token_signer, signature=b"\x01" * length
    )
    with pytest.raises(BadSignature):
        verify(data)


# --- subject, audience, time ---------------------------------------------------


def test_wrong_subject(verify: Callable[..., Claims], token: bytes) -> None:
    with pytest.raises(WrongSubject):
        verify(token, device_id="gw-0002")


def test_subject_compared_exactly(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    with pytest.raises(WrongSubject):
        verify(make_token(sub=DEVICE_ID.upper()))


def test_wrong_audience(verify: Callable[..., Claims], make_token: Callable[..., bytes]) -> None:
    with pytest.raises(WrongAudience):
        verify(make_token(aud="someone-else"))


def test_audience_absent_is_accepted(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    assert verify(make_token(aud=None)).aud is None


def test_expired_at_exp(verify: Callable[..., Claims], make_token: Callable[..., bytes]) -> None:
    """now == exp is already expired; one second earlier is fine."""
    data = make_token(exp=NOW + 100)
    assert verify(data, now=NOW + 99).exp == NOW + 100
    with pytest.raises(Expired):
        verify(data, now=NOW + 100)


def test_expired_skew_does_not_extend_exp(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    with pytest.raises(Expired):
        verify(make_token(exp=NOW), skew=3600)


def test_not_yet_valid_nbf_minus_skew_boundary(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    nbf = NOW + 1000
    data = make_token(nbf=nbf, iat=NOW - 60)
    assert verify(data, now=nbf - DEFAULT_SKEW_S).nbf == nbf
    with pytest.raises(NotYetValid):
        verify(data, now=nbf - DEFAULT_SKEW_S - 1)


def test_not_yet_valid_falls_back_to_iat(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    data = make_token(iat=NOW + 1000, nbf=None)
    assert verify(data, now=NOW + 1000 - DEFAULT_SKEW_S).iat == NOW + 1000
    with pytest.raises(NotYetValid):
        verify(data, now=NOW + 1000 - DEFAULT_SKEW_S - 1)


def test_not_yet_valid_custom_skew(
    verify: Callable[..., Claims], make_token: Callable[..., bytes]
) -> None:
    data = make_token(nbf=NOW + 10)
    with pytest.raises(NotYetValid):
        verify(data, skew=0, now=NOW + 9)
    assert verify(data, skew=0, now=NOW + 10).nbf == NOW + 10


# --- size -------------------------------------------------------------------------


def _token_of_size(size: int, signer: Ed25519PrivateKey) -> bytes:
    """A valid token of exactly ``size`` bytes (padding in a feature parameter)."""
    pad = size - 300
    for _ in range(5):
        raw = claims_map(ent={"remote_access": {"until": NOW + 86400, "note": "x" * pad}})
        data = token_with_claims(raw, signer)
        if len(data) == size:
            return data
        pad += size - len(data)
    raise AssertionError(f"no padding gives a {size}-byte token")


def test_token_at_size_limit_accepted(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    data = _token_of_size(MAX_TOKEN_BYTES, token_signer)
    assert verify(data).ent["remote_access"].params["note"].startswith("x")


def test_token_over_size_limit(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    with pytest.raises(TooLarge):
        verify(_token_of_size(MAX_TOKEN_BYTES + 1, token_signer))


def test_too_large_is_refused_before_decoding(
    verify: Callable[..., Claims], monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoder ran on an oversized token")

    monkeypatch.setattr(protocol.cbor, "_scan", must_not_run)
    monkeypatch.setattr(protocol.cbor.cbor2, "loads", must_not_run)
    with pytest.raises(TooLarge):
        verify(b"\xff" * (MAX_TOKEN_BYTES + 1))  # garbage: any decoding would say BadCbor


# --- claims ---------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["sub", "exp", "iat", "cti", "ver", "ent"])
def test_required_claim_missing(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey, claim: str
) -> None:
    with pytest.raises(BadClaims):
        verify(token_with_claims(claims_map(**{claim: DELETE}), token_signer))


ILL_TYPED = [
    ("sub", 1234),
    ("sub", b"gw-0001"),
    ("sub", None),
    ("exp", "never"),
    ("exp", -1),
    ("exp", True),
    ("exp", float(NOW + 100)),
    ("iat", "now"),
    ("iat", -5),
    ("iat", None),
    ("cti", "text-id"),
    ("cti", b""),
    ("cti", b"\x00" * 65),
    ("cti", 42),
    ("ver", -1),
    ("ver", "7"),
    ("ver", False),
    ("ver", 7.0),
    ("nbf", "soon"),
    ("nbf", -1),
    ("iss", 1),
    ("aud", ["entitle"]),
    ("inst", 1),
    ("epoch", -1),
    ("epoch", "0"),
    ("ent", []),
    ("ent", "all"),
    ("ent", None),
    ("ent", {"remote_access": NOW}),
    ("ent", {"remote_access": []}),
    ("ent", {"remote_access": {}}),
    ("ent", {"remote_access": {"until": "forever"}}),
    ("ent", {"remote_access": {"until": -1}}),
    ("ent", {"remote_access": {"until": True}}),
    ("ent", {"remote_access": {"until": 1.5e9}}),
    ("ent", {"remote_access": {"until": NOW, 1: "int param key"}}),
    ("ent", {"": {"until": NOW}}),
    ("ent", {"f" * 65: {"until": NOW}}),
    ("ent", {1: {"until": NOW}}),
    ("ent", {f"f{i}": {"until": NOW} for i in range(257)}),
    ("crit", "ver"),
    ("crit", {"ver": 1}),
]


@pytest.mark.parametrize(
    ("claim", "value"), ILL_TYPED, ids=[f"{c}={v!r:.30}" for c, v in ILL_TYPED]
)
def test_ill_typed_claim(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey, claim: str, value: Any
) -> None:
    with pytest.raises(BadClaims):
        verify(token_with_claims(claims_map(**{claim: value}), token_signer))


@pytest.mark.parametrize(
    "payload", [[1, 2], "claims", 7, b"\xa0"], ids=["array", "text", "int", "bstr"]
)
def test_payload_not_a_claims_map(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey, payload: Any
) -> None:
    with pytest.raises(BadClaims):
        verify(token_with_claims(cbor2.dumps(payload), token_signer))


def test_payload_bad_cbor(verify: Callable[..., Claims], token_signer: Ed25519PrivateKey) -> None:
    good = cbor2.dumps(claims_map(), canonical=True)
    with pytest.raises(BadCbor):
        verify(token_with_claims(good + b"\x00", token_signer))


def test_payload_duplicate_claim(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    """Two `sub` claims, the second for another device: refused, not last-wins."""
    good = cbor2.dumps(claims_map(), canonical=True)
    assert good[0] == 0xA9  # map of 9
    forged = b"\xaa" + good[1:] + cbor2.dumps(2) + cbor2.dumps("gw-0002")
    with pytest.raises(BadCbor):
        verify(token_with_claims(forged, token_signer))


@pytest.mark.parametrize(
    "crit", [["x-unknown"], ["ver", "x-unknown"], [4], [[1]], [{"a": 1}]], ids=repr
)
def test_unknown_critical_claim(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey, crit: list[Any]
) -> None:
    raw = claims_map(crit=crit, **{"x-unknown": 1})
    with pytest.raises(BadClaims):
        verify(token_with_claims(raw, token_signer))


def test_known_critical_claims_accepted(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    raw = claims_map(crit=["ver", "ent", "inst"])
    assert verify(token_with_claims(raw, token_signer)).ver == 7


def test_unknown_non_critical_claims_ignored(
    verify: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> None:
    raw = claims_map(**{"x-promo": {"nested": [1, 2, 3]}, "zone": "eu"})
    raw[99] = "unregistered int claim"
    raw[-65537] = b"private int claim"
    claims = verify(token_with_claims(raw, token_signer))
    assert claims.sub == DEVICE_ID and claims.ver == 7


def test_feature_params_kept(verify: Callable[..., Claims], token: bytes) -> None:
    claims = verify(token)
    assert claims.ent["video_retention"] == Feature(until=NOW + 30 * 86400, params={"days": 30})


def test_errors_are_untrusted_data_errors(verify: Callable[..., Claims], token: bytes) -> None:
    with pytest.raises(TokenError) as info:
        verify(token, device_id="gw-0002")
    assert isinstance(info.value, UntrustedDataError)
    assert info.value.reason == "wrong_subject"


# --- feature_allowed ------------------------------------------------------------


def test_feature_allowed_when_paid_and_fresh(make_claims: Callable[..., Claims]) -> None:
    allowed, why = feature_allowed(make_claims(), "remote_access", now=NOW)
    assert allowed and "paid through" in why


def test_feature_not_allowed_without_token() -> None:
    assert feature_allowed(None, "remote_access", now=NOW)[0] is False


def test_feature_not_in_token(make_claims: Callable[..., Claims]) -> None:
    assert feature_allowed(make_claims(), "voice_control", now=NOW)[0] is False


def test_feature_paid_period_over(make_claims: Callable[..., Claims]) -> None:
    claims = make_claims(ent={"voice": Feature(until=NOW + 10)}, exp=NOW + 1000)
    assert feature_allowed(claims, "voice", now=NOW + 9)[0] is True
    assert feature_allowed(claims, "voice", now=NOW + 10)[0] is False


def test_feature_stale_token(make_claims: Callable[..., Claims]) -> None:
    """Paid through next month, but the token lapsed: not allowed (revocation bound)."""
    claims = make_claims(ent={"voice": Feature(until=NOW + 10**6)}, exp=NOW + 10)
    assert feature_allowed(claims, "voice", now=NOW + 9)[0] is True
    allowed, why = feature_allowed(claims, "voice", now=NOW + 10)
    assert not allowed and "expired" in why


def test_reasons_give_dates_not_epoch_seconds(make_claims: Callable[..., Claims]) -> None:
    claims = make_claims(ent={"voice": Feature(until=1_798_761_600)}, exp=1_768_435_200)
    allowed, why = feature_allowed(claims, "voice", now=1_767_225_600)
    assert allowed and why == (
        f"paid through 2027-01-01T00:00:00Z (token ver {claims.ver}, "
        "fresh until 2026-01-15T00:00:00Z)"
    )
    assert when(1_767_225_600) == "2026-01-01T00:00:00Z"
    assert when(10**15) == "epoch second 1000000000000000"  # past year 9999: as it is
