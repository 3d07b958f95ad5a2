"""`entitle token inspect` on every shared vector file prints the typed reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from entitle.cli import app
from simulators import TokenRepositorySimulator

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"
EXPECTED = {
    # an EdDSA COSE_Sign1 whose payload is text, not a CWT claims set
    "cose-eddsa-sig-01.json": "bad_cbor",
    "cose-sign1-sign-fail-01.json": "bad_cbor",  # tag 998 instead of 18
    "cose-sign1-sign-fail-02.json": "bad_algorithm",  # ES256
    "cose-sign1-sign-fail-03.json": "bad_algorithm",  # alg -999
    "cose-sign1-sign-fail-04.json": "bad_algorithm",  # alg "unknown"
    "cose-sign1-sign-fail-06.json": "bad_algorithm",
    "cose-sign1-sign-fail-07.json": "bad_algorithm",
    "cose-sign1-sign-pass-01.json": "bad_algorithm",  # alg only unprotected
    # not tokens at all: refused as CBOR, never crash
    "ed25519-small-order-keys.json": "bad_cbor",
    "wycheproof-ed25519_test.json": "too_large",  # 124 KiB: refused before decoding
}
runner = CliRunner()


def _inspect(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["token", "inspect", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, json.loads("".join(lines))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_inspect_vector_file_prints_typed_reason(name):
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} not copied into tests/protocol/vectors")
    code, out = _inspect(str(path))
    assert code == 1
    assert out["error"] == EXPECTED[name], out


def test_inspect_and_verify_a_real_token(tmp_path):
    repo = TokenRepositorySimulator()
    now = int(time.time())
    token = tmp_path / "t.cbor"
    token.write_bytes(repo.token("gw-01", {"remote_access": now + 60}, now=now))
    keyset = tmp_path / "keyset.cbor"
    keyset.write_bytes(repo.root_keyset)
    code, out = _inspect(str(token), "--keys", str(keyset))
    assert code == 0 and out["verified"] is True
    assert out["claims"]["sub"] == "gw-01" and "remote_access" in out["claims"]["ent"]
    code, out = _inspect(str(token), "--keys", str(keyset), "--device", "gw-02")
    assert code == 1 and out["error"] == "wrong_subject"
    code, out = _inspect(str(token), "--keys", str(keyset), "--now", str(now + 10**8))
    assert code == 1 and out["error"] == "expired"
