"""Device credentials, one home: new broker passwords and every way they are hashed.

- :func:`hash_password`: the cloud's record of a device password (scrypt; the
  password itself is shown once and never stored).
- :func:`mosquitto_hash`: the ``$7$`` form of a Mosquitto password file (the
  embedded broker's logins); :func:`mosquitto_secret`: the same PBKDF2 as
  Mosquitto's dynamic-security plugin stores it (salt and hash apart).
- :func:`verify_password` checks a password against any of them, arguments in
  the order every ``verify_password`` of the project takes: ``(password, stored)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "mosquitto_hash", "mosquitto_secret", "new_password", "verify_password"]

_SCHEME = "scrypt"
# The passwords are 192 random bits, not human choices: stretching adds little, so a
# modest cost (4 MiB, ~10 ms) keeps device registration fast; the parameters are
# stored with each hash, so they can be raised later without breaking old hashes.
_N, _R, _P = 2**12, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024
# Mosquitto's PBKDF2-HMAC-SHA512 (what mosquitto_passwd and mosquitto_ctrl write)
_MOSQUITTO_ITERATIONS, _MOSQUITTO_SALT_BYTES = 101, 12


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def new_password() -> str:
    """A random broker password (192 bits, URL-safe text)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, n: int = _N, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for storage; the password itself is never stored."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=_R, p=_P, dklen=_HASH_BYTES, maxmem=_SCRYPT_MAXMEM
    )
    return f"{_SCHEME}${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def mosquitto_secret(password: str) -> dict[str, str | int]:
    """PBKDF2-HMAC-SHA512 as the dynamic-security plugin stores it (salt and hash base64)."""
    salt = secrets.token_bytes(_MOSQUITTO_SALT_BYTES)
    return {
        "password": _b64(_pbkdf2(password, salt, _MOSQUITTO_ITERATIONS)),
        "salt": _b64(salt),
        "iterations": _MOSQUITTO_ITERATIONS,
    }


def mosquitto_hash(password: str) -> str:
    """A Mosquitto 2 password-file hash: ``$7$`` = PBKDF2-HMAC-SHA512, 101 rounds."""
    secret = mosquitto_secret(password)
    return f"$7${secret['iterations']}${secret['salt']}${secret['password']}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, a :func:`hash_password` or
    :func:`mosquitto_hash` hash; a malformed or unknown hash matches nothing."""
    try:
        if stored.startswith("$7$"):
            _, _, rounds, salt, digest = stored.split("$")
            expected = base64.b64decode(digest, validate=True)
            actual = _pbkdf2(password, base64.b64decode(salt, validate=True), int(rounds))
        else:
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
                maxmem=_SCRYPT_MAXMEM,
            )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)
