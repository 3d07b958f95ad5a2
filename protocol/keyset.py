"""Key sets: which keys a device trusts, and how that trust is rotated.

A key set has a version, a counter ``epoch`` (tokens' ``ver`` is compared
within one epoch), *root* keys with a threshold (they sign key sets) and
*token* keys (they sign entitlement tokens). Splitting the roles means the
online token key, if stolen, cannot rotate trust.

A key set travels as a COSE_Sign whose payload is the CBOR map
``{"v", "epoch", "threshold", "root": [{"kid", "x"}], "token": [...]}``.
Rotation follows TUF's root rule: version N+1 exactly, signed by a threshold
of root N's keys *and* a threshold of its own root keys; signatures count
once per distinct kid; at most :data:`MAX_ROTATIONS` per message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import cbor
from protocol.cose import decode_sign, encode_sign
from protocol.errors import (
    BadStructure,
    KeySetError,
    ThresholdNotMet,
    TooManyRotations,
    UnknownKey,
    VersionNotNext,
)
from protocol.keys import check_public_key, key_id, load_public_key, public_bytes

__all__ = [
    "MAX_KEYSET_BYTES",
    "MAX_ROTATIONS",
    "KeySet",
    "SignedKeySet",
    "apply_rotations",
    "decode_keyset_message",
    "parse_signed_keyset",
    "sign_keyset",
    "trust_root",
]

MAX_KEYSET_BYTES = 64 * 1024
MAX_ROTATIONS = 4
MAX_KEYS = 32
CONTENT_TYPE = "application/entitle-keyset+cbor"


@dataclass(frozen=True, slots=True)
class KeySet:
    """Trusted keys: root keys (threshold) sign key sets, token keys sign tokens."""

    version: int
    threshold: int
    root: Mapping[bytes, bytes]
    token: Mapping[bytes, bytes]
    epoch: int = 0
    _objects: dict[bytes, Ed25519PublicKey] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.version < 1 or self.epoch < 0:
            raise KeySetError("key set version must be >= 1 and epoch >= 0")
        if not 1 <= self.threshold <= len(self.root):
            raise KeySetError(f"threshold {self.threshold} needs 1..{len(self.root)} root keys")
        if not self.token:
            raise KeySetError("a key set needs at least one token-signing key")
        for kid, raw in (*self.root.items(), *self.token.items()):
            check_public_key(raw)
            if key_id(raw) != kid:
                raise KeySetError(f"kid {kid.hex()} does not match its key")

    @classmethod
    def create(
        cls,
        *,
        version: int,
        threshold: int,
        root: Iterable[bytes],
        token: Iterable[bytes],
        epoch: int = 0,
    ) -> KeySet:
        """Build from raw public keys, deriving the kids."""
        return cls(
            version=version,
            threshold=threshold,
            root={key_id(k): k for k in root},
            token={key_id(k): k for k in token},
            epoch=epoch,
        )

    def _object(self, kid: bytes, raw: bytes) -> Ed25519PublicKey:
        obj = self._objects.get(kid)
        if obj is None:
            obj = self._objects[kid] = load_public_key(raw)
        return obj

    def token_key(self, kid: bytes) -> Ed25519PublicKey:
        """The token-signing key with ``kid``; raises UnknownKey."""
        raw = self.token.get(kid)
        if raw is None:
            raise UnknownKey(f"kid {kid.hex()} is not a token key of key set v{self.version}")
        return self._object(kid, raw)

    def root_keys(self) -> dict[bytes, Ed25519PublicKey]:
        return {kid: self._object(kid, raw) for kid, raw in self.root.items()}

    def to_cbor(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "epoch": self.epoch,
            "threshold": self.threshold,
            "root": [{"kid": k, "x": x} for k, x in sorted(self.root.items())],
            "token": [{"kid": k, "x": x} for k, x in sorted(self.token.items())],
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "epoch": self.epoch,
            "threshold": self.threshold,
            "root": [k.hex() for k in sorted(self.root)],
            "token": [k.hex() for k in sorted(self.token)],
        }

    @classmethod
    def from_cbor(cls, raw: Any) -> KeySet:
        if not isinstance(raw, dict):
            raise BadStructure("key set payload must be a map")

        def keys(name: str) -> dict[bytes, bytes]:
            entries = raw.get(name)
            if not isinstance(entries, list) or len(entries) > MAX_KEYS:
                raise BadStructure(f"key set {name!r} must be an array of at most {MAX_KEYS}")
            out: dict[bytes, bytes] = {}
            for e in entries:
                if not isinstance(e, dict) or not isinstance(e.get("kid"), bytes):
                    raise BadStructure(f"key set {name!r} entries are {{kid, x}} maps")
                if e["kid"] in out:
                    raise KeySetError(f"duplicate kid {e['kid'].hex()} in {name!r}")
                x: Any = e.get("x")  # checked in __post_init__
                out[e["kid"]] = x
            return out

        version: Any = raw.get("v")
        threshold: Any = raw.get("threshold")
        epoch: Any = raw.get("epoch", 0)
        for name, value in (("v", version), ("threshold", threshold), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadStructure(f"key set {name!r} must be an integer")
        return cls(
            version=version,
            threshold=threshold,
            root=keys("root"),
            token=keys("token"),
            epoch=epoch,
        )


@dataclass(frozen=True, slots=True)
class SignedKeySet:
    """A parsed key set with the distinct root kids whose signatures verified."""

    keyset: KeySet
    raw: bytes
    _message: Any

    def signers_among(self, keys: Mapping[bytes, Ed25519PublicKey]) -> frozenset[bytes]:
        result: frozenset[bytes] = self._message.signed_by(keys)
        return result


def sign_keyset(keyset: KeySet, signers: Iterable[Ed25519PrivateKey]) -> bytes:
    """Encode ``keyset`` signed by each of ``signers`` (root keys, old and new)."""
    pairs = [(key_id(public_bytes(k)), k) for k in signers]
    return encode_sign(cbor.encode(keyset.to_cbor()), pairs, content_type=CONTENT_TYPE)


def parse_signed_keyset(data: bytes) -> SignedKeySet:
    """Parse one signed key set; signatures are checked by the caller's rule."""
    msg = decode_sign(data, max_size=MAX_KEYSET_BYTES, max_signatures=2 * MAX_KEYS)
    keyset = KeySet.from_cbor(cbor.decode(msg.payload, max_size=MAX_KEYSET_BYTES))
    return SignedKeySet(keyset, data, msg)


def _require_threshold(signed: SignedKeySet, trusted: KeySet, what: str) -> None:
    signers = signed.signers_among(trusted.root_keys())
    if len(signers) < trusted.threshold:
        raise ThresholdNotMet(
            f"key set v{signed.keyset.version}: {len(signers)} valid distinct signatures "
            f"from {what}, {trusted.threshold} needed"
        )


def trust_root(data: bytes) -> KeySet:
    """Accept a provisioned root key set: it must meet its own threshold."""
    signed = parse_signed_keyset(data)
    _require_threshold(signed, signed.keyset, "its own root keys")
    return signed.keyset


def decode_keyset_message(data: bytes) -> list[bytes]:
    """A key-set message is one signed key set or a CBOR array of them (a chain)."""
    if len(data) > MAX_KEYSET_BYTES * (MAX_ROTATIONS + 1):
        raise KeySetError("key-set message is over the size limit")
    item = cbor.decode(data, max_size=MAX_KEYSET_BYTES * (MAX_ROTATIONS + 1))
    if isinstance(item, list):
        if len(item) > MAX_ROTATIONS:
            raise TooManyRotations(f"{len(item)} key sets in one message, at most {MAX_ROTATIONS}")
        if not all(isinstance(x, bytes) for x in item):
            raise BadStructure("a key-set chain is an array of byte strings")
        return list(item)
    return [data]


def apply_rotations(trusted: KeySet, chain: Sequence[bytes]) -> KeySet:
    """Apply a chain of rotations to ``trusted``; all or nothing.

    Key sets at or below the trusted version are skipped (a retained message
    seen again); each newer one must be exactly the next version.
    """
    if len(chain) > MAX_ROTATIONS:
        raise TooManyRotations(f"{len(chain)} rotations in one message, at most {MAX_ROTATIONS}")
    current = trusted
    for data in chain:
        signed = parse_signed_keyset(data)
        new = signed.keyset
        if new.version <= current.version:
            continue
        if new.version != current.version + 1:
            raise VersionNotNext(f"key set v{new.version} after v{current.version}")
        if new.epoch < current.epoch:
            raise KeySetError(f"key set epoch {new.epoch} is older than {current.epoch}")
        _require_threshold(signed, current, f"root v{current.version}")
        _require_threshold(signed, new, "its own root keys")
        current = new
    return current
