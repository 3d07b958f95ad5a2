"""`entitle token inspect`: every shared vector file gets its typed reason, and a
person's mistake (a missing file, the wrong JSON) a sentence saying what to pass."""

from __future__ import annotations

import base64
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
}
# JSON that is no token at all: a sentence, not a CBOR error
NOT_TOKENS = ["ed25519-small-order-keys.json", "wycheproof-ed25519_test.json"]
HINT = "pass the token itself: the retained message of entitle/v1/dev/ID/entitlement"
runner = CliRunner()


def _inspect(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["token", "inspect", *args])
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, json.loads("".join(lines))


def _mistake(*args: str, stdin: bytes | None = None) -> str:
    """A usage mistake: exit 2, nothing on stdout, one 'error:' line on stderr, no traceback."""
    result = runner.invoke(app, ["token", "inspect", *args], input=stdin)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not a crash
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


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


@pytest.mark.parametrize("name", NOT_TOKENS)
def test_inspect_json_vector_that_is_no_token_says_so(name):
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} not copied into tests/protocol/vectors")
    line = _mistake(str(path))
    assert f"error: {path} holds JSON" in line and "not a token; " + HINT in line


def test_inspect_a_missing_file_says_what_to_pass(tmp_path):
    missing = tmp_path / "missing.cbor"
    assert _mistake(str(missing)) == (
        f"error: cannot read {missing}: No such file or directory; {HINT} (raw bytes), the JSON "
        "of GET /api/v1/devices/ID/entitlement or its token_b64 value, or - to read standard input"
    )
    assert _mistake(str(tmp_path)).startswith(f"error: cannot read {tmp_path}: Is a directory; ")
    assert _mistake("-", stdin=b"").startswith("error: standard input is empty; ")


def test_inspect_reads_the_json_the_api_returns(tmp_path):
    """GET /api/v1/devices/ID/entitlement's body is read as it is (its token_b64)."""
    repo = TokenRepositorySimulator()
    now = int(time.time())
    token = repo.token("gw-01", {"remote_access": now + 60}, now=now)
    body = {"device_id": "gw-01", "token_b64": base64.b64encode(token).decode(), "claims": {}}
    saved = tmp_path / "entitlement.json"
    saved.write_text(json.dumps(body))
    keyset = tmp_path / "keyset.json"  # GET /api/v1/keyset's body
    keyset.write_text(
        json.dumps({"version": 1, "keyset_b64": base64.b64encode(repo.root_keyset).decode()})
    )
    code, out = _inspect(str(saved), "--keys", str(keyset))
    assert code == 0 and out["verified"] is True and out["claims"]["sub"] == "gw-01"


def test_inspect_other_api_json_says_what_to_pass(tmp_path):
    """The grants answer names token versions, not tokens: said, not a bare bad_cbor."""
    grants = {"tokens": [{"device_id": "gw-01", "ver": 2, "exp": 1, "published": True}]}
    line = _mistake("-", stdin=json.dumps(grants).encode())
    assert line.startswith("error: standard input holds JSON with tokens, not a token; " + HINT)

    repo = TokenRepositorySimulator()
    token = tmp_path / "t.cbor"
    token.write_bytes(repo.token("gw-01", {}, now=int(time.time())))
    jwks = tmp_path / "jwks.json"  # GET /api/v1/keys: public keys, not a signed key set
    jwks.write_text(json.dumps({"keys": [{"kty": "OKP"}]}))
    line = _mistake(str(token), "--keys", str(jwks))
    assert line.startswith(f"error: {jwks} holds JSON with keys, not a key set; pass a signed")
    assert "entitle keys show --export FILE" in line
