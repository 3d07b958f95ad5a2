"""Hand-built COSE for the protocol tests, independent of protocol.cose.

The builders sign with a real key over the RFC 9052 Sig_structure (encoded
with plain cbor2, not with our code), so a malformed token still carries a
*valid* signature: when the verifier refuses it, the structural check did,
not the signature check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.keys import key_id, public_bytes

NOW = 1_760_000_000  # fixed reference time (2025-10-09); no test reads a clock
DEVICE_ID = "gw-0001"
VECTORS = Path(__file__).resolve().parent / "vectors"

DELETE: Any = object()  # claims_map(name=DELETE) drops the claim


def load_vector(name: str) -> Any:
    """A JSON vector file; cose-wg files may start with a byte-order mark."""
    return json.loads((VECTORS / name).read_text(encoding="utf-8-sig"))


SMALL_ORDER_VECTOR = load_vector("ed25519-small-order-keys.json")
# the 8 small-order public keys, as pytest params with readable ids
SMALL_ORDER = [
    pytest.param(bytes.fromhex(k["x_hex"]), id=f"order{k['order']}-{k['x_hex'][:8]}")
    for k in SMALL_ORDER_VECTOR["keys"]
]
IDENTITY = bytes.fromhex(SMALL_ORDER_VECTOR["keys"][0]["x_hex"])
FORGED_FOR_IDENTITY = bytes.fromhex(SMALL_ORDER_VECTOR["forged_signature_for_identity_key_hex"])


def private_key(name: str) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key named ``name``."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(b"entitle-test/" + name.encode()).digest()
    )


def kid_of(private: Ed25519PrivateKey) -> bytes:
    return key_id(public_bytes(private))


def sig_structure1(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign1(
    protected: dict[Any, Any] | bytes,
    unprotected: dict[Any, Any],
    payload: Any,
    signer: Ed25519PrivateKey,
    *,
    tag: int | None = 18,
    signature: bytes | None = None,
) -> bytes:
    """A COSE_Sign1 with exactly these parts, validly signed unless ``signature`` is given.

    ``protected`` is a header map (encoded with cbor2) or its raw bytes;
    ``payload`` is raw bytes (or anything, to build wrong shapes: then the
    signature covers its CBOR encoding); ``tag=None`` leaves it untagged.
    """
    protected_raw = protected if isinstance(protected, bytes) else cbor2.dumps(protected)
    if signature is None:
        signed = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
        signature = signer.sign(sig_structure1(protected_raw, signed))
    body = [protected_raw, unprotected, payload, signature]
    return cbor2.dumps(body if tag is None else cbor2.CBORTag(tag, body))


def claims_map(**overrides: Any) -> dict[Any, Any]:
    """The raw CWT claims map of a valid token for DEVICE_ID at NOW.

    Keyword names are claim names (``sub``, ``exp``, ``ver``, ...); pass
    ``DELETE`` to drop a claim. Standard claims use their integer labels.
    """
    labels = {"iss": 1, "sub": 2, "aud": 3, "exp": 4, "nbf": 5, "iat": 6, "cti": 7}
    raw: dict[Any, Any] = {
        1: "entitle",
        2: DEVICE_ID,
        3: "entitle",
        4: NOW + 14 * 86400,
        6: NOW - 60,
        7: b"\x42" * 16,
        "ver": 7,
        "inst": "inst-1",
        "ent": {"remote_access": {"until": NOW + 30 * 86400}},
    }
    for name, value in overrides.items():
        label = labels.get(name, name)
        if value is DELETE:
            raw.pop(label, None)
        else:
            raw[label] = value
    return raw


def token_with_claims(raw: Any, signer: Ed25519PrivateKey) -> bytes:
    """A well-formed, validly signed token whose payload encodes ``raw`` (any CBOR value)."""
    payload = raw if isinstance(raw, bytes) else cbor2.dumps(raw, canonical=True)
    return sign1({1: -8, 4: kid_of(signer)}, {}, payload, signer)


def sign_keyset_payload(payload: dict[str, Any], signers: list[Ed25519PrivateKey]) -> bytes:
    """A COSE_Sign over an arbitrary key-set payload map (bypasses KeySet's own checks)."""
    body_protected = cbor2.dumps({3: "application/entitle-keyset+cbor"})
    raw = cbor2.dumps(payload, canonical=True)
    sigs = []
    for signer in signers:
        protected = cbor2.dumps({1: -8, 4: kid_of(signer)})
        tbs = cbor2.dumps(["Signature", body_protected, protected, b"", raw])
        sigs.append([protected, {}, signer.sign(tbs)])
    return cbor2.dumps(cbor2.CBORTag(98, [body_protected, {}, raw, sigs]))


def keyset_entries(raw_keys: list[bytes]) -> list[dict[str, bytes]]:
    return [{"kid": key_id(x), "x": x} for x in raw_keys]
