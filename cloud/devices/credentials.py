"""Broker passwords of devices: generated here, shown once, stored as a scrypt hash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "new_password", "verify_password"]

_SCHEME = "scrypt"
# The passwords are 192 random bits, not human choices: stretching adds little, so a
# modest cost (4 MiB, ~10 ms) keeps device registration fast; the parameters are
# stored with each hash, so they can be raised later without breaking old hashes.
_N, _R, _P = 2**12, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def new_password() -> str:
    """A random broker password (192 bits, URL-safe text)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, n: int = _N, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for storage; the password itself is never stored."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=_R, p=_P, dklen=_HASH_BYTES, maxmem=64 * 1024 * 1024
    )
    return f"{_SCHEME}${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password`."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
