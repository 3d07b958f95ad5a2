"""No secret reaches a log: signing keys, device passwords, API keys.

A realistic run of the cloud with every logger at DEBUG (SQLAlchemy's
statements and parameters included); then the captured text is searched
for each secret in every encoding it might be logged in.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from typer.testing import CliRunner

from cloud import create_app
from cloud.accounts import queries as account_queries
from cloud.accounts.apikeys import new_key, revoke_api_key
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator
from entitle.cli import app as cli
from tests.cloud.harness import DAY, FakeClock, cli_env, client, new_api_key, running


def _encodings(raw: bytes) -> set[str]:
    """The ways 32 secret bytes could show up in text."""
    b64 = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    return {raw.hex(), raw.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("="), repr(raw)}


def _private_key_secrets(keys_dir: Path) -> dict[str, str]:
    """Every private key file under ``keys_dir``: PEM text, its base64 body, raw bytes."""
    out: dict[str, str] = {}
    for pem_file in keys_dir.glob("*.pem"):
        pem = pem_file.read_bytes()
        key = load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        body = "".join(pem.decode().splitlines()[1:-1])
        for value in (pem.decode(), body, *_encodings(raw)):
            out[value] = f"private key {pem_file.name}"
    return out


def _every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)


async def test_no_secret_is_logged_at_debug(
    settings: CloudSettings,
    publisher: PublisherSimulator,
    accounts: AccountsSimulator,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _every_logger_at_debug(caplog)
    secrets: dict[str, str] = {}  # secret -> what it is (the report names only that)
    app = create_app(settings, publisher=publisher, accounts=accounts, clock=clock)
    async with running(app):
        _every_logger_at_debug(caplog)  # loggers made while starting, too
        secrets |= _private_key_secrets(settings.keys_dir)
        api_key = new_api_key(app, "operator")
        args = ["cloud", "apikey", "create", "--name", "ci"]
        created = CliRunner().invoke(cli, args, env=cli_env(settings))
        assert created.exit_code == 0, created.stderr
        cli_key = created.stdout.strip()
        secrets |= {api_key: "API key", cli_key: "API key from the CLI"}

        async with client(app, api_key) as http:
            inst = (await http.post("/api/v1/installations", json={"name": "Shop"})).json()["id"]
            for kind in ("gateway", "camera", "counter"):
                body = {"installation_id": inst, "kind": kind}
                response = await http.post("/api/v1/devices", json=body)
                assert response.status_code == 201, response.text
                secrets[response.json()["mqtt_password"]] = f"MQTT password of a {kind}"
            grant = {"feature": "video_retention", "until": clock() + 30 * DAY, "params": {}}
            assert (await http.post(f"/api/v1/installations/{inst}/grants", json=grant)).is_success
            publisher.down = True  # the warning path, with the transport error's text
            assert (await http.post(f"/api/v1/installations/{inst}/grants", json=grant)).is_success
            publisher.down = False
            for rotation in ({}, {"new_root": True, "new_epoch": True}):
                response = await http.post("/api/v1/keys/rotate", json=rotation)
                assert response.status_code == 200, response.text
                secrets |= _private_key_secrets(settings.keys_dir)
            await http.delete(f"/api/v1/installations/{inst}/grants/video_retention")
            clock.advance(20 * DAY)
            await app.state.cloud.refresh_job.run_once()

        # refused keys: a stranger's, a mistyped real one, and a revoked one
        wrong = [new_key(), api_key[:-1] + ("A" if api_key[-1] != "A" else "B"), cli_key]
        secrets |= dict.fromkeys(wrong, "a refused API key")
        with app.state.cloud.store.transaction() as tx:
            [cli_row] = [row for row in account_queries.api_keys(tx) if row.name == "ci"]
        revoke_api_key(app.state.cloud.store, cli_row.id, now=clock())
        for key in wrong:
            async with client(app, key) as http:
                assert (await http.get("/api/v1/installations")).status_code == 401

    records = caplog.records
    assert len(records) > 50, "logging was not captured at DEBUG"
    assert any(r.name.startswith("sqlalchemy.engine") for r in records)
    assert len(secrets) > 20
    texts = [caplog.text] + [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records]
    leaked = sorted({what for s, what in secrets.items() for text in texts if s in text})
    assert not leaked, f"secrets in the log: {leaked}"
