"""Every verify_password of the project takes (password, stored), in that order."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from cloud.accounts import passwords
from cloud.accounts.users import checked_password
from cloud.errors import InvalidRequest
from common import credentials


@pytest.mark.parametrize("verify", [credentials.verify_password, passwords.verify_password])
def test_every_verify_password_takes_the_password_first(verify: Callable[[str, str], bool]) -> None:
    assert list(inspect.signature(verify).parameters) == ["password", "stored"]


def test_a_user_password_verifies_in_the_same_order() -> None:
    stored = passwords.hash_password("correct horse battery staple")
    assert passwords.verify_password("correct horse battery staple", stored)
    assert not passwords.verify_password(stored, "correct horse battery staple")


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short", "a password must have 10-1024 characters"),
        ("x" * 1025, "a password must have 10-1024 characters"),
        ("lone \ud800 surrogate inside", "a password must be plain text (UTF-8)"),
    ],
)
def test_a_password_the_rules_or_the_hasher_refuse_is_a_typed_refusal(
    password: str, says: str
) -> None:
    """Every path that sets a password (create, update, reset, change) checks it here, so
    a password the hasher cannot take is an InvalidRequest, never a codec error."""
    with pytest.raises(InvalidRequest) as refused:
        checked_password(password)
    assert str(refused.value).startswith(says)
    assert checked_password("correct horse battery staple") == "correct horse battery staple"
