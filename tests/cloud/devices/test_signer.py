"""Issuer keys on disk: modes, refusal of exposed keys, signing, rotation, JWKS."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloud.devices.signer import Signer
from cloud.errors import InsecureKeyFile, KeyFileError
from protocol.errors import UnknownKey, VersionNotNext
from protocol.keyset import MAX_ROTATIONS, apply_rotations, decode_keyset_message, trust_root
from protocol.token import Claims, verify_token

NOW = 1_800_000_000


def _claims(ver: int = 1, epoch: int = 0) -> Claims:
    return Claims(sub="gw-1", iat=NOW, exp=NOW + 60, cti=b"c" * 16, ver=ver, ent={}, epoch=epoch)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_private_files_and_reloads_the_same_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signer = Signer.load_or_create(keys)
    names = sorted(p.name for p in keys.iterdir())
    assert [n.split("-")[0] for n in names if n.endswith(".pem")] == ["root", "token"]
    assert "keyset.cbor" in names
    assert _mode(keys) == 0o700
    for path in keys.rglob("*"):
        if path.is_file():
            assert _mode(path) == 0o600, path
    assert not list(keys.glob(".*.tmp"))

    again = Signer.load_or_create(keys)
    assert again.keyset == signer.keyset and again.keyset_bytes == signer.keyset_bytes
    assert trust_root(again.keyset_bytes) == signer.keyset
    token = again.sign(_claims())
    assert verify_token(token, key_for=signer.keyset.token_key, device_id="gw-1", now=NOW).ver == 1


@pytest.mark.parametrize("role", ["root", "token"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o700])
def test_refuses_a_key_file_wider_than_0600(tmp_path: Path, role: str, mode: int) -> None:
    keys = tmp_path / "keys"
    Signer.load_or_create(keys)
    [key_file] = keys.glob(f"{role}-*.pem")
    os.chmod(key_file, mode)
    if mode & 0o077:
        with pytest.raises(InsecureKeyFile, match=f"mode {mode:04o}.*chmod 600 {key_file}"):
            Signer.load_or_create(keys)
        os.chmod(key_file, 0o600)
    Signer.load_or_create(keys)  # 0600, or narrower for group and others


def test_key_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        signer = Signer.load_or_create(tmp_path / "keys")
        signer.rotate(new_root=True)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "keys").rglob("*") if p.is_file()]
    assert len(files) >= 4
    assert {_mode(p) for p in files} == {0o600}


def test_refuses_a_key_that_does_not_match_the_keyset(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    Signer.load_or_create(keys)
    [root_file] = keys.glob("root-*.pem")
    [token_file] = keys.glob("token-*.pem")
    root_file.write_bytes(token_file.read_bytes())
    with pytest.raises(KeyFileError, match="does not hold"):
        Signer.load_or_create(keys)


def test_rotation_chain_is_accepted_by_a_device(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    signer = Signer.load_or_create(keys, root_keys=3, threshold=2)
    v1 = signer.keyset
    old_token = signer.sign(_claims())

    signer.rotate()
    v2 = signer.keyset
    assert (v2.version, v2.epoch, v2.root) == (2, 0, v1.root)
    assert v2.token.keys().isdisjoint(v1.token.keys())

    signer.rotate(new_root=True, new_epoch=True)
    v3 = signer.keyset
    assert (v3.version, v3.epoch, v3.threshold) == (3, 1, 2)
    assert v3.root.keys().isdisjoint(v1.root.keys())

    # a device still at v1 catches up from the retained key-set message
    chain = decode_keyset_message(signer.keyset_message())
    assert len(chain) == 3
    assert apply_rotations(v1, chain) == v3
    new_token = signer.sign(_claims(epoch=1))
    assert verify_token(new_token, key_for=v3.token_key, device_id="gw-1", now=NOW).epoch == 1
    with pytest.raises(UnknownKey):
        verify_token(old_token, key_for=v3.token_key, device_id="gw-1", now=NOW)

    # retired private keys are gone; the new state reloads
    assert len(list(keys.glob("root-*.pem"))) == 3
    assert len(list(keys.glob("token-*.pem"))) == 1
    assert Signer.load_or_create(keys).keyset == v3


def test_jwks_and_repr_hold_no_private_material(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "keys", root_keys=2, threshold=1)
    jwks = signer.public_keys_jwks()
    assert [k["entitle_role"] for k in jwks["keys"]] == ["token", "root", "root"]
    assert all("d" not in k for k in jwks["keys"])
    pem_bodies = [p.read_text() for p in (tmp_path / "keys").glob("*.pem")]
    assert all(body not in repr(signer) for body in pem_bodies)
    assert "keyset=v1" in repr(signer)


def test_keyset_message_carries_at_most_max_rotations(tmp_path: Path) -> None:
    signer = Signer.load_or_create(tmp_path / "keys")
    history = [signer.keyset]
    for _ in range(5):
        signer.rotate()
        history.append(signer.keyset)
    chain = decode_keyset_message(signer.keyset_message())
    assert len(chain) == MAX_ROTATIONS
    assert apply_rotations(history[1], chain) == signer.keyset  # v2 catches up to v6
    with pytest.raises(VersionNotNext):
        apply_rotations(history[0], chain)  # v1 is too far behind: re-provision it
