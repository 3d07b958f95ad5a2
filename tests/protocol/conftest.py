"""Fixtures for the protocol tests: deterministic keys, a key set, a token factory.

Everything here is fixed (seeded keys, a constant ``NOW``) so that tokens are
byte-identical from run to run; no test reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.keys import key_id, public_bytes
from protocol.keyset import KeySet
from protocol.token import Claims, Feature, issue_token
from tests.protocol.cose_forge import DEVICE_ID, NOW, private_key


@pytest.fixture(scope="session")
def token_signer() -> Ed25519PrivateKey:
    """The cloud's online token-signing key."""
    return private_key("token-1")


@pytest.fixture(scope="session")
def root_signers() -> list[Ed25519PrivateKey]:
    """Three offline root keys of key set v1 (threshold 2)."""
    return [private_key(f"root-v1-{i}") for i in range(3)]


@pytest.fixture(scope="session")
def keyset(root_signers: list[Ed25519PrivateKey], token_signer: Ed25519PrivateKey) -> KeySet:
    """Key set v1: 2-of-3 root keys, one token key."""
    return KeySet.create(
        version=1,
        threshold=2,
        root=[public_bytes(k) for k in root_signers],
        token=[public_bytes(token_signer)],
    )


@pytest.fixture(scope="session")
def make_claims() -> Callable[..., Claims]:
    """Claims for DEVICE_ID valid at NOW; keyword arguments override fields."""

    def make(**overrides: Any) -> Claims:
        fields: dict[str, Any] = {
            "sub": DEVICE_ID,
            "iat": NOW - 60,
            "exp": NOW + 14 * 86400,
            "cti": b"\x42" * 16,
            "ver": 7,
            "ent": {
                "video_retention": Feature(until=NOW + 30 * 86400, params={"days": 30}),
                "remote_access": Feature(until=NOW + 30 * 86400),
            },
            "iss": "entitle",
            "aud": "entitle",
            "inst": "inst-1",
        }
        fields.update(overrides)
        return Claims(**fields)

    return make


@pytest.fixture(scope="session")
def make_token(
    make_claims: Callable[..., Claims], token_signer: Ed25519PrivateKey
) -> Callable[..., bytes]:
    """A token signed by the trusted token key; keyword arguments override claims."""

    def make(**overrides: Any) -> bytes:
        kid = key_id(public_bytes(token_signer))
        return issue_token(make_claims(**overrides), token_signer, kid=kid)

    return make


@pytest.fixture(scope="session")
def token(make_token: Callable[..., bytes]) -> bytes:
    """One valid token for DEVICE_ID at NOW."""
    return make_token()
