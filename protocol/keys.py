"""Ed25519 public keys: the checks every key passes before it is trusted.

`cryptography` (OpenSSL) accepts signatures under small-order public keys —
under the identity point, ``identity || zeros`` verifies for any message —
so a key is refused when its encoding is not 32 bytes, not canonical
(y >= p), or names one of the eight points of small order.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import BadKey, BadSignature

__all__ = [
    "KEY_ID_LENGTH",
    "check_public_key",
    "key_id",
    "load_public_key",
    "public_bytes",
    "verify_ed25519",
]

KEY_ID_LENGTH = 8
_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
# y-coordinates of the 8 small-order points (orders 1, 2, 4, 8). Each y is
# shared by a point and its negation, so the sign bit does not matter; the
# non-canonical encodings y + p are refused by the y < p check.
_SMALL_ORDER_Y = frozenset(
    {
        0,  # order 4: (±sqrt(-1), 0)
        1,  # order 1: the identity (0, 1)
        _P - 1,  # order 2: (0, -1)
        0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7,  # order 8
        0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,  # order 8
    }
)


def check_public_key(raw: bytes) -> None:
    """Refuse a key that must never be trusted.

    Raises:
        BadKey: wrong type or length, non-canonical encoding, or small order.
    """
    if not isinstance(raw, bytes):
        raise BadKey(f"public key must be bytes, got {type(raw).__name__}")
    if len(raw) != 32:
        raise BadKey(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    y = int.from_bytes(raw, "little") & _Y_MASK
    if y >= _P:
        raise BadKey("non-canonical Ed25519 public key encoding (y >= p)")
    if y in _SMALL_ORDER_Y:
        raise BadKey("Ed25519 public key of small order: any signature could verify")


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Check ``raw`` and return it as a `cryptography` key object."""
    check_public_key(raw)
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise BadKey(f"not an Ed25519 public key: {exc}") from exc


def key_id(raw: bytes) -> bytes:
    """The key id we publish for a public key: the first 8 bytes of its SHA-256."""
    return hashlib.sha256(raw).digest()[:KEY_ID_LENGTH]


def public_bytes(private: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key of a private key."""
    # public_bytes_raw, not public_bytes(Encoding.Raw, ...): the serialization module costs
    # the agent 1.2 MB of RSS for this one call (issue 16, the lean agent)
    return private.public_key().public_bytes_raw()


def verify_ed25519(key: Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Verify one signature, mapping the foreign exception to ours.

    Raises:
        BadSignature: the signature does not verify.
    """
    if len(signature) != 64:
        raise BadSignature(f"Ed25519 signature must be 64 bytes, got {len(signature)}")
    try:
        key.verify(signature, message)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc
