"""cose-wg/Examples: the RFC 8152 EdDSA example and the sign1 pass/fail cases."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.cose import decode_sign1, verify_sign1
from protocol.errors import (
    BadAlgorithm,
    BadCbor,
    BadSignature,
    UnknownKey,
    UntrustedDataError,
)
from protocol.keys import load_public_key, public_bytes
from tests.protocol.cose_forge import VECTORS, load_vector, sig_structure1

LIMIT = 1 << 16
EDDSA = load_vector("cose-eddsa-sig-01.json")
EDDSA_KEY = EDDSA["input"]["sign0"]["key"]
SIGN1_FILES = sorted(p.name for p in VECTORS.glob("cose-sign1-sign-*.json"))

_LABELS = {"alg": 1, "ctyp": 3, "kid": 4}
_ALGS = {"EdDSA": -8, "ES256": -7}


def _header(names: dict[str, Any], *, alg: int | None = None) -> dict[int, Any]:
    """A cose-wg JSON header as a COSE map; ``alg`` replaces the algorithm if given."""
    out: dict[int, Any] = {}
    for name, value in names.items():
        if name == "alg":
            value = alg if alg is not None else _ALGS.get(value, value)
        elif name == "kid":
            value = value.encode()
        out[_LABELS[name]] = value
    return out


def _eddsa_key_for(kid: bytes) -> Ed25519PublicKey:
    if kid != EDDSA_KEY["kid"].encode():
        raise UnknownKey(kid.hex())
    return load_public_key(bytes.fromhex(EDDSA_KEY["x_hex"]))


def _no_key(kid: bytes) -> Ed25519PublicKey:
    raise AssertionError("the structural check should refuse this before any key lookup")


# --- the EdDSA example, byte for byte ---------------------------------------------


def test_eddsa_example_parses_to_its_parts() -> None:
    msg = decode_sign1(bytes.fromhex(EDDSA["output"]["cbor"]), max_size=LIMIT)
    assert msg.kid == b"11"
    assert msg.payload == EDDSA["input"]["plaintext"].encode()
    assert cbor2.loads(msg.protected_raw) == {1: -8, 3: 0}


def test_eddsa_example_to_be_signed_bytes() -> None:
    msg = decode_sign1(bytes.fromhex(EDDSA["output"]["cbor"]), max_size=LIMIT)
    assert msg.to_be_signed() == bytes.fromhex(EDDSA["intermediates"]["ToBeSign_hex"])


def test_eddsa_example_signature_verifies() -> None:
    msg = decode_sign1(bytes.fromhex(EDDSA["output"]["cbor"]), max_size=LIMIT)
    assert verify_sign1(msg, _eddsa_key_for) == b"This is the content."


def test_eddsa_example_signature_is_reproduced_by_its_private_key() -> None:
    """Ed25519 is deterministic: d signs our to-be-signed bytes into the example's signature."""
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EDDSA_KEY["d_hex"]))
    assert public_bytes(private) == bytes.fromhex(EDDSA_KEY["x_hex"])
    msg = decode_sign1(bytes.fromhex(EDDSA["output"]["cbor"]), max_size=LIMIT)
    assert private.sign(msg.to_be_signed()) == msg.signature


def test_eddsa_example_with_flipped_signature_bit_is_refused() -> None:
    data = bytearray(bytes.fromhex(EDDSA["output"]["cbor"]))
    data[-1] ^= 0x01
    msg = decode_sign1(bytes(data), max_size=LIMIT)
    with pytest.raises(BadSignature):
        verify_sign1(msg, _eddsa_key_for)


# --- the sign1 cases as published (ES256): refused before any signature work --------

AS_PUBLISHED = {
    # tag 998 is not a tag the protocol ever accepts: the strict decoder refuses it
    "cose-sign1-sign-fail-01.json": BadCbor,
    # the rest name ES256 (or -999, "unknown"): the pinned algorithm refuses them
    "cose-sign1-sign-fail-02.json": BadAlgorithm,
    "cose-sign1-sign-fail-03.json": BadAlgorithm,
    "cose-sign1-sign-fail-04.json": BadAlgorithm,
    "cose-sign1-sign-fail-06.json": BadAlgorithm,
    "cose-sign1-sign-fail-07.json": BadAlgorithm,
    # a "pass" for a lenient ES256 verifier: alg only in the unprotected header
    "cose-sign1-sign-pass-01.json": BadAlgorithm,
}


def test_every_sign1_file_has_an_expectation() -> None:
    assert set(SIGN1_FILES) == set(AS_PUBLISHED)


@pytest.mark.parametrize("name", SIGN1_FILES)
def test_sign1_case_as_published(name: str) -> None:
    vector = load_vector(name)
    with pytest.raises(AS_PUBLISHED[name]):
        verify_sign1(decode_sign1(bytes.fromhex(vector["output"]["cbor"]), max_size=LIMIT), _no_key)


# --- the same failures applied to an EdDSA message we can sign ----------------------

# failure kind -> the error our verifier must give once the algorithm is EdDSA
FAILURE_ERRORS: dict[str, type[UntrustedDataError]] = {
    "ChangeCBORTag": BadCbor,  # a tag we never accept
    "ChangeTag": BadSignature,  # content changed after signing
    "ChangeAttr": BadAlgorithm,  # alg changed to -999 / "unknown"
    "AddProtected": BadSignature,  # protected header grew after signing
    "RemoveProtected": BadSignature,  # protected header shrank after signing
    "ChangeProtected": BadAlgorithm,  # pass-01: alg left in the unprotected header
}


def _eddsa_twin(vector: dict[str, Any]) -> bytes:
    """The vector's message rebuilt with EdDSA and the example key, then its failure applied."""
    sign0 = vector["input"]["sign0"]
    ((kind, arg),) = vector["input"]["failures"].items()
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EDDSA_KEY["d_hex"]))
    protected = _header(sign0.get("protected", {}), alg=-8)
    unprotected = _header(sign0["unprotected"], alg=-8)
    payload = vector["input"]["plaintext"].encode()
    signed_protected = cbor2.dumps(protected) if protected else b""
    sent_protected = signed_protected
    tag = 18
    if kind == "ChangeCBORTag":
        tag = arg
    elif kind == "ChangeTag":
        payload = payload[:-1] + bytes([payload[-1] ^ 1])
    elif kind == "ChangeAttr":
        sent_protected = cbor2.dumps({**protected, **_header(arg)})
    elif kind == "AddProtected":
        sent_protected = cbor2.dumps({**protected, **_header(arg)})
    elif kind == "RemoveProtected":
        removed = set(_header(arg))
        sent_protected = cbor2.dumps({k: v for k, v in protected.items() if k not in removed})
    elif kind == "ChangeProtected":
        sent_protected = bytes.fromhex(arg)
    else:
        raise AssertionError(f"unknown failure kind {kind}")
    signed_payload = vector["input"]["plaintext"].encode()
    signature = private.sign(sig_structure1(signed_protected, signed_payload))
    return cbor2.dumps(cbor2.CBORTag(tag, [sent_protected, unprotected, payload, signature]))


@pytest.mark.parametrize("name", SIGN1_FILES)
def test_sign1_failure_applied_to_eddsa(name: str) -> None:
    vector = load_vector(name)
    (kind,) = vector["input"]["failures"]
    with pytest.raises(FAILURE_ERRORS[kind]):
        verify_sign1(decode_sign1(_eddsa_twin(vector), max_size=LIMIT), _eddsa_key_for)


def test_eddsa_twin_without_failure_verifies() -> None:
    """Control: the rebuild itself is sound, so the failures above are what is refused."""
    vector = load_vector("cose-sign1-sign-fail-06.json")
    vector["input"]["failures"] = {"ChangeTag": 0}
    twin = cbor2.loads(_eddsa_twin(vector))
    payload = twin.value[2]
    twin.value[2] = payload[:-1] + bytes([payload[-1] ^ 1])  # undo the content change
    msg = decode_sign1(cbor2.dumps(twin), max_size=LIMIT)
    assert verify_sign1(msg, _eddsa_key_for) == b"This is the content."
