"""Passwords: argon2id through argon2-cffi's ``PasswordHasher``; hashes are never shown.

The hasher's parameters are the library's defaults (RFC 9106 low-memory
profile). A hash made with other parameters still verifies, and
:func:`needs_rehash` tells the login to store a fresh one.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "check_password",
    "hash_password",
    "needs_rehash",
    "verify_password",
    "waste_a_verification",
]

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; a bound keeps a request from costing more

_HASHER = PasswordHasher()


def check_password(password: str) -> str:
    """The password if it is acceptable.

    Raises:
        ValueError: shorter than ``MIN_PASSWORD`` or longer than ``MAX_PASSWORD`` characters.
    """
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(
            f"a password must have {MIN_PASSWORD}-{MAX_PASSWORD} characters; "
            "a passphrase of a few words is easy to remember"
        )
    return password


def hash_password(password: str, *, hasher: PasswordHasher | None = None) -> str:
    """The argon2id hash (PHC string) to store."""
    return (hasher or _HASHER).hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed stored hash matches nothing."""
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than the current ones."""
    try:
        return _HASHER.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def waste_a_verification(password: str) -> None:
    """Spend what a verification costs, so an unknown e-mail answers as slowly as a known one."""
    verify_password(password, _dummy_hash())


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("not the password of anyone")
