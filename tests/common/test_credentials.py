"""Device credentials have one home (common.credentials); verify_password is (password, stored)."""

from __future__ import annotations

import json

import pytest

from common.credentials import (
    hash_password,
    mosquitto_hash,
    mosquitto_secret,
    new_password,
    verify_password,
)
from common.dynsec import merge_config


def test_hash_password_is_mosquitto_7_format() -> None:  # was in tests/integration/test_broker_acl
    hashed = mosquitto_hash("s3cret")
    _, kind, rounds, salt, digest = hashed.split("$")
    assert (kind, rounds, len(salt), len(digest)) == ("7", "101", 16, 88)
    assert verify_password("s3cret", hashed) and not verify_password("other", hashed)
    assert mosquitto_hash("s3cret") != hashed  # random salt


def test_the_cloud_record_is_scrypt_and_verifies() -> None:
    password = new_password()
    stored = hash_password(password)
    assert stored.startswith("scrypt$") and password not in stored
    assert verify_password(password, stored)
    assert not verify_password(password + "x", stored)


def test_the_dynsec_secret_is_the_same_pbkdf2_as_the_passwd_file() -> None:
    secret = mosquitto_secret("s3cret")
    stored = f"$7${secret['iterations']}${secret['salt']}${secret['password']}"
    assert verify_password("s3cret", stored)
    config = merge_config(None, clouds={"cloud": "c"}, devices={"gw-1": "d"})
    [device] = [c for c in config["clients"] if c["username"] == "gw-1"]
    assert verify_password("d", f"$7${device['iterations']}${device['salt']}${device['password']}")
    json.dumps(config)  # the plugin's file is JSON


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$1$2", "$7$x$y$z", "bcrypt$a$b$c$d$e"])
def test_a_malformed_or_foreign_hash_matches_nothing(stored: str) -> None:
    assert not verify_password("anything", stored)
