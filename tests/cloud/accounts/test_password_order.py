"""Every verify_password of the project takes (password, stored), in that order."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from cloud.accounts import passwords
from common import credentials


@pytest.mark.parametrize("verify", [credentials.verify_password, passwords.verify_password])
def test_every_verify_password_takes_the_password_first(verify: Callable[[str, str], bool]) -> None:
    assert list(inspect.signature(verify).parameters) == ["password", "stored"]


def test_a_user_password_verifies_in_the_same_order() -> None:
    stored = passwords.hash_password("correct horse battery staple")
    assert passwords.verify_password("correct horse battery staple", stored)
    assert not passwords.verify_password(stored, "correct horse battery staple")
