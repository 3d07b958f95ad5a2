"""TokenRepositorySimulator: the cloud's signing side, in memory.

Modelled on python-tuf's ``RepositorySimulator``: it owns root and token
keys, issues tokens with the real encoder, rotates key sets with the real
signer, and lets a test play attacker (sign with a stolen or unknown key,
skip a version, duplicate signatures). Tests and benchmarks drive the
agent's verifier and store with it; it is a simulator, not the cloud.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import cbor
from protocol.cose import encode_sign
from protocol.keys import key_id, public_bytes
from protocol.keyset import CONTENT_TYPE, KeySet, sign_keyset
from protocol.token import AUDIENCE, Claims, Feature, issue_token

__all__ = ["TokenRepositorySimulator"]


@dataclass
class TokenRepositorySimulator:
    """In-memory issuer: key sets, per-device counters, tokens."""

    root_count: int = 1
    threshold: int = 1
    ttl: int = 14 * 86400
    root_keys: list[Ed25519PrivateKey] = field(default_factory=list)
    token_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    version: int = 1
    epoch: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    keyset_history: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.root_keys:
            self.root_keys = [Ed25519PrivateKey.generate() for _ in range(self.root_count)]
        self.keyset_history.append(sign_keyset(self.keyset, self.root_keys[: self.threshold]))

    @property
    def keyset(self) -> KeySet:
        return KeySet.create(
            version=self.version,
            threshold=self.threshold,
            root=[public_bytes(k) for k in self.root_keys],
            token=[public_bytes(self.token_key)],
            epoch=self.epoch,
        )

    @property
    def root_keyset(self) -> bytes:
        """The signed key set devices are provisioned with (the first one)."""
        return self.keyset_history[0]

    @property
    def current_keyset(self) -> bytes:
        return self.keyset_history[-1]

    def token(
        self,
        device_id: str,
        features: Mapping[str, int | tuple[int, Mapping[str, Any]]],
        *,
        now: int,
        ver: int | None = None,
        ttl: int | None = None,
        key: Ed25519PrivateKey | None = None,
        epoch: int | None = None,
        inst: str | None = "inst_sim",
        kid: bytes | None = None,
        **overrides: Any,
    ) -> bytes:
        """Issue the next token for ``device_id``; ``features`` maps name → until.

        ``ver``, ``key``, ``epoch``, ``kid`` (a kid other than the signer's) and
        claim ``overrides`` let a test forge.
        """
        if ver is None:
            ver = self.versions.get(device_id, 0) + 1
            self.versions[device_id] = ver
        ent = {}
        for name, spec in features.items():
            until, params = (spec, {}) if isinstance(spec, int) else spec
            ent[name] = Feature(until=until, params=dict(params))
        claims = Claims(
            sub=device_id,
            iat=now,
            nbf=now,
            exp=now + (self.ttl if ttl is None else ttl),
            cti=os.urandom(16),
            ver=ver,
            ent=ent,
            iss="entitle",
            aud=AUDIENCE,
            inst=inst,
            epoch=self.epoch if epoch is None else epoch,
        )
        if overrides:
            claims = replace(claims, **overrides)
        signer = key or self.token_key
        return issue_token(claims, signer, kid=kid or key_id(public_bytes(signer)))

    def rotate(
        self,
        *,
        new_root: bool = False,
        new_token_key: bool = True,
        new_epoch: bool = False,
        version: int | None = None,
        signers: list[Ed25519PrivateKey] | None = None,
    ) -> bytes:
        """Publish key set version+1 signed by old and new root thresholds.

        ``version`` and ``signers`` let a test forge (skip, sign with too few).
        """
        old_roots = self.root_keys
        if new_root:
            self.root_keys = [Ed25519PrivateKey.generate() for _ in range(self.root_count)]
        if new_token_key:
            self.token_key = Ed25519PrivateKey.generate()
        self.version = self.version + 1 if version is None else version
        if new_epoch:
            self.epoch += 1
            self.versions.clear()
        if signers is None:
            signers = list(
                {
                    id(k): k
                    for k in [*old_roots[: self.threshold], *self.root_keys[: self.threshold]]
                }.values()
            )
        data = sign_keyset(self.keyset, signers)
        self.keyset_history.append(data)
        return data

    def rotation_chain(self, count: int, **rotate_args: Any) -> bytes:
        """``count`` rotations published as one key-set message (a CBOR array)."""
        return cbor.encode([self.rotate(**rotate_args) for _ in range(count)])

    def forged_rotation(
        self,
        *,
        version: int | None = None,
        signers: Iterable[Ed25519PrivateKey] | None = None,
        extra_root: Iterable[bytes] = (),
        extra_token: Iterable[bytes] = (),
        threshold: int | None = None,
    ) -> bytes:
        """A key set v(version+1) built past :class:`KeySet`'s own checks; state unchanged.

        ``extra_root`` / ``extra_token`` add raw public keys (small-order ones,
        say), ``signers`` replaces the current root threshold, ``version`` and
        ``threshold`` override. With no knob turned it is a valid rotation.
        """
        payload = self.keyset.to_cbor()
        payload["v"] = self.version + 1 if version is None else version
        if threshold is not None:
            payload["threshold"] = threshold
        for role, extra in (("root", extra_root), ("token", extra_token)):
            payload[role] = [*payload[role], *({"kid": key_id(x), "x": x} for x in extra)]
        chosen = self.root_keys[: self.threshold] if signers is None else list(signers)
        pairs = [(key_id(public_bytes(k)), k) for k in chosen]
        return encode_sign(cbor.encode(payload), pairs, content_type=CONTENT_TYPE)
