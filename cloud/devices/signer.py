"""Issuer keys on disk: root keys sign key sets, the token key signs tokens.

Layout of ``keys_dir`` (mode 0700; every file 0600, written temp-then-rename)::

    root-<kidhex>.pem        Ed25519 private key, PEM PKCS8, one per root key
    token-<kidhex>.pem       the token-signing key
    keyset.cbor              the current signed key set (COSE_Sign): the commit point
    keysets/<version>.cbor   every signed key set, so a chain can be served

A rotation writes the new key files and history entry first and replaces
``keyset.cbor`` last, so a crash leaves the old, complete state; keys the new
set no longer names are deleted afterwards. Private key bytes never leave
this module: not in logs, reprs or return values.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from cloud.errors import InsecureKeyFile, KeyFileError
from protocol import cbor
from protocol.cose import ALG_EDDSA
from protocol.errors import EntitleError
from protocol.keys import key_id, public_bytes
from protocol.keyset import (
    MAX_KEYSET_BYTES,
    MAX_ROTATIONS,
    KeySet,
    apply_rotations,
    sign_keyset,
    trust_root,
)
from protocol.token import Claims, issue_token

__all__ = ["Signer"]

_log = logging.getLogger(__name__)

KEYSET_FILE = "keyset.cbor"
HISTORY_DIR = "keysets"
_MAX_KEY_FILE = 4096
# COSE_Key labels and values (RFC 9052 section 7.1, RFC 9053 section 7.2; IANA COSE registries)
_COSE_KTY, _COSE_KID, _COSE_ALG, _COSE_KEY_OPS = 1, 2, 3, 4
_COSE_OKP_CRV, _COSE_OKP_X = -1, -2
_COSE_KTY_OKP, _COSE_OP_VERIFY, _COSE_CRV_ED25519 = 1, 2, 6


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, never readable by anyone but us."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is only used for a new file
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_private(path: Path) -> bytes:
    """Read a file that must be ours alone.

    Raises:
        InsecureKeyFile: group or others may read or write it.
        KeyFileError: missing, not a regular file, or too large.
    """
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} is missing") from exc
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{path} is not a regular file")
    if info.st_mode & 0o077:
        raise InsecureKeyFile(
            f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}, wider than 0600: "
            f"run 'chmod 600 {path}' and check who could have read it"
        )
    data = path.read_bytes()
    if len(data) > _MAX_KEY_FILE and path.suffix == ".pem":
        raise KeyFileError(f"key file {path} is too large to be an Ed25519 key")
    return data


def _read_public(path: Path) -> bytes:
    """Read a signed key set (public data): only its size is checked."""
    try:
        if path.stat().st_size > MAX_KEYSET_BYTES:
            raise KeyFileError(f"{path} is over the {MAX_KEYSET_BYTES}-byte key-set limit")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path} is missing") from exc


def _pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _load_key(path: Path, kid: bytes) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(_read_private(path), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM PKCS8 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    if key_id(public_bytes(key)) != kid:
        raise KeyFileError(f"{path} does not hold the key with kid {kid.hex()}")
    return key


@dataclass(frozen=True, slots=True, repr=False)
class _State:
    keyset: KeySet
    signed: bytes
    roots: dict[bytes, Ed25519PrivateKey]
    token_kid: bytes
    token_key: Ed25519PrivateKey


class Signer:
    """The cloud's issuer: signs tokens and rotates key sets; see the module doc."""

    def __init__(self, keys_dir: Path, state: _State) -> None:
        self._dir = keys_dir
        self._state = state

    def __repr__(self) -> str:
        ks = self._state.keyset
        return f"Signer(dir={str(self._dir)!r}, keyset=v{ks.version}, epoch={ks.epoch})"

    # loading ----------------------------------------------------------------
    @classmethod
    def load_or_create(cls, keys_dir: Path, *, root_keys: int = 1, threshold: int = 1) -> Signer:
        """Load the issuer from ``keys_dir``, creating keys and key set v1 if absent.

        Raises:
            InsecureKeyFile: a key file is readable by group or others.
            KeyFileError: key files missing, corrupt or not matching the key set.
        """
        keys_dir = Path(keys_dir)
        if (keys_dir / KEYSET_FILE).exists():
            return cls._load(keys_dir)
        if not 1 <= threshold <= root_keys:
            raise ValueError(f"threshold {threshold} needs 1..{root_keys} root keys")
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        roots = [Ed25519PrivateKey.generate() for _ in range(root_keys)]
        token = Ed25519PrivateKey.generate()
        keyset = KeySet.create(
            version=1,
            threshold=threshold,
            root=[public_bytes(k) for k in roots],
            token=[public_bytes(token)],
        )
        signed = sign_keyset(keyset, roots)
        trust_root(signed)  # never write a key set a device would refuse
        signer = cls(keys_dir, cls._commit(keys_dir, keyset, signed, roots, token))
        _log.info("created issuer keys in %s: key set v1, %d root key(s)", keys_dir, root_keys)
        return signer

    @classmethod
    def _load(cls, keys_dir: Path) -> Signer:
        signed = _read_public(keys_dir / KEYSET_FILE)
        try:
            keyset = trust_root(signed)
        except EntitleError as exc:
            raise KeyFileError(f"{keys_dir / KEYSET_FILE} is not a valid signed key set") from exc
        roots = {kid: _load_key(keys_dir / f"root-{kid.hex()}.pem", kid) for kid in keyset.root}
        token_kids = [
            kid for kid in sorted(keyset.token) if (keys_dir / f"token-{kid.hex()}.pem").exists()
        ]
        if not token_kids:
            raise KeyFileError(f"no token-<kid>.pem in {keys_dir} for key set v{keyset.version}")
        token_kid = token_kids[0]
        token = _load_key(keys_dir / f"token-{token_kid.hex()}.pem", token_kid)
        _log.info("loaded issuer keys from %s: key set v%d", keys_dir, keyset.version)
        return cls(keys_dir, _State(keyset, signed, roots, token_kid, token))

    @staticmethod
    def _commit(
        keys_dir: Path,
        keyset: KeySet,
        signed: bytes,
        roots: Sequence[Ed25519PrivateKey],
        token: Ed25519PrivateKey,
    ) -> _State:
        for key in roots:
            _write_private(keys_dir / f"root-{key_id(public_bytes(key)).hex()}.pem", _pem(key))
        token_kid = key_id(public_bytes(token))
        _write_private(keys_dir / f"token-{token_kid.hex()}.pem", _pem(token))
        history = keys_dir / HISTORY_DIR
        history.mkdir(mode=0o700, exist_ok=True)
        _write_private(history / f"{keyset.version:06d}.cbor", signed)
        _write_private(keys_dir / KEYSET_FILE, signed)
        return _State(
            keyset=keyset,
            signed=signed,
            roots={key_id(public_bytes(k)): k for k in roots},
            token_kid=token_kid,
            token_key=token,
        )

    # public surface ---------------------------------------------------------
    @property
    def keyset(self) -> KeySet:
        """The current key set."""
        return self._state.keyset

    @property
    def keyset_bytes(self) -> bytes:
        """The current signed key set (COSE_Sign), as devices are provisioned with."""
        return self._state.signed

    @property
    def token_kid(self) -> bytes:
        return self._state.token_kid

    def sign(self, claims: Claims) -> bytes:
        """Sign ``claims`` into a COSE_Sign1 token with the current token key."""
        state = self._state
        return issue_token(claims, state.token_key, kid=state.token_kid)

    def chain(self, *, limit: int = MAX_ROTATIONS) -> list[bytes]:
        """The last ``limit`` signed key sets, oldest first, ending with the current one."""
        state = self._state
        out = [state.signed]
        for version in range(state.keyset.version - 1, state.keyset.version - limit, -1):
            path = self._dir / HISTORY_DIR / f"{version:06d}.cbor"
            if version < 1 or not path.exists():
                break  # a chain must be contiguous to be applied
            out.insert(0, _read_public(path))
        return out

    def keyset_message(self) -> bytes:
        """What is retained on ``entitle/v1/keys``: one key set, or a CBOR array chain.

        A device up to :data:`MAX_ROTATIONS` versions behind catches up from it.
        """
        chain = self.chain()
        return chain[0] if len(chain) == 1 else cbor.encode(chain)

    def rotate(self, *, new_root: bool = False, new_epoch: bool = False) -> bytes:
        """Replace the token key (and the root keys if ``new_root``); return the new key set.

        The new key set has version + 1 (and epoch + 1 if ``new_epoch``) and is
        signed by every current root key and every new one, which meets both
        thresholds of the TUF rule.
        """
        old = self._state
        roots = (
            [Ed25519PrivateKey.generate() for _ in old.roots]
            if new_root
            else list(old.roots.values())
        )
        token = Ed25519PrivateKey.generate()
        keyset = KeySet.create(
            version=old.keyset.version + 1,
            threshold=old.keyset.threshold,
            root=[public_bytes(k) for k in roots],
            token=[public_bytes(token)],
            epoch=old.keyset.epoch + (1 if new_epoch else 0),
        )
        signers = list(old.roots.values()) + (roots if new_root else [])
        signed = sign_keyset(keyset, signers)
        apply_rotations(old.keyset, [signed])  # never write a key set a device would refuse
        state = self._commit(self._dir, keyset, signed, roots, token)
        self._state = state
        retired = [f"token-{old.token_kid.hex()}.pem"]
        if new_root:
            retired += [f"root-{kid.hex()}.pem" for kid in old.roots]
        for name in retired:
            (self._dir / name).unlink(missing_ok=True)
        _log.info(
            "rotated issuer keys: key set v%d epoch %d%s",
            keyset.version,
            keyset.epoch,
            " with new root keys" if new_root else "",
        )
        return state.signed

    def _public_keys(self) -> list[tuple[str, bytes, bytes]]:
        """``(role, kid, raw)`` of every current public key: token keys first."""
        keyset = self._state.keyset
        return [
            (role, kid, raw)
            for role, group in (("token", keyset.token), ("root", keyset.root))
            for kid, raw in sorted(group.items())
        ]

    def public_keys_jwks(self) -> dict[str, Any]:
        """The current public keys as a JWK Set (RFC 8037 OKP keys).

        A JWK ``kid`` is text and our COSE kids are 8 raw bytes, which no JWK
        loader maps back (``cwt`` takes the text's UTF-8 bytes): the ``kid`` here
        is the base64url of the COSE kid, for display and JOSE tools. COSE
        libraries load :meth:`public_keys_cose`, whose kids match tokens' own.
        """
        keys = [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": _b64url(kid),
                "x": _b64url(raw),
                "use": "sig",
                "key_ops": ["verify"],
                "entitle_role": role,
            }
            for role, kid, raw in self._public_keys()
        ]
        return {"keys": keys}

    def public_keys_cose(self) -> bytes:
        """The current public keys as a COSE_KeySet (RFC 9052 section 7), in CBOR.

        Each COSE_Key is ``{kty: OKP, kid, alg: EdDSA, key_ops: [verify],
        crv: Ed25519, x}`` plus the text label ``"entitle_role"`` ("token" keys
        sign tokens, "root" keys sign key sets); the kid is the bytes tokens
        carry, so COSE libraries select the key by it.
        """
        return cbor.encode(
            [
                {
                    _COSE_KTY: _COSE_KTY_OKP,
                    _COSE_KID: kid,
                    _COSE_ALG: ALG_EDDSA,
                    _COSE_KEY_OPS: [_COSE_OP_VERIFY],
                    _COSE_OKP_CRV: _COSE_CRV_ED25519,
                    _COSE_OKP_X: raw,
                    "entitle_role": role,
                }
                for role, kid, raw in self._public_keys()
            ]
        )
