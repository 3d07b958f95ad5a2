"""The ``entitle`` command: demo, broker, cloud, agent, keys, token, config.

Heavy imports happen inside each command, so ``entitle agent check`` on a
device does not load the cloud.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from entitle.config import Settings

__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
broker_app = typer.Typer(no_args_is_help=True, help="The MQTT broker.")
cloud_app = typer.Typer(no_args_is_help=True, help="The cloud service.")
agent_app = typer.Typer(no_args_is_help=True, help="The on-device agent.")
keys_app = typer.Typer(no_args_is_help=True, help="Issuer keys and key sets.")
token_app = typer.Typer(no_args_is_help=True, help="Entitlement tokens.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
for sub, name in (
    (broker_app, "broker"),
    (cloud_app, "cloud"),
    (agent_app, "agent"),
    (keys_app, "keys"),
    (token_app, "token"),
    (config_app, "config"),
):
    app.add_typer(sub, name=name)

console = Console()
err = Console(stderr=True)
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable
        raise _fail(f"invalid configuration: {exc}") from exc


# --- demo -------------------------------------------------------------------
@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="Simulated devices (1-10).")] = 3,
    cycles: Annotated[int, typer.Option(help="Grant/revoke cycles; 0 runs until Ctrl-C.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between changes.")] = 2.0,
    embedded_broker: Annotated[
        bool, typer.Option("--embedded-broker", help="Use amqtt even if mosquitto exists.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Broker + cloud + simulated devices, with live enforcement."""
    from entitle.demo import run_demo

    _logging(verbose)
    if not 1 <= devices <= 10:
        raise _fail("--devices must be 1..10 (one installation has at most 10 controllers)")
    try:
        asyncio.run(
            run_demo(
                devices=devices,
                cycles=cycles,
                interval=interval,
                embedded=embedded_broker,
                console=console,
            )
        )
    except KeyboardInterrupt:
        console.print("demo stopped")


# --- broker -----------------------------------------------------------------
@broker_app.command("run")
def broker_run(
    port: Annotated[int, typer.Option(help="Port to listen on (0: a free one).")] = 1884,
    embedded_broker: Annotated[
        bool, typer.Option("--embedded-broker", help="Use amqtt instead of mosquitto.")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Mosquitto with a generated password file and ACL (amqtt if absent)."""
    from entitle import broker as brokers

    _logging(verbose)
    settings = _settings()
    directory = settings.data_dir / "broker"
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "cloud.secret"
    if not secret_file.exists():
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(24))
    password = secret_file.read_text().strip()
    port = port or brokers.find_free_port()
    hint = (
        f"cloud: ENTITLE_BROKER_URL=mqtt://cloud@127.0.0.1:{port} "
        f"ENTITLE_BROKER_PASSWORD_FILE={secret_file}"
    )
    if embedded_broker or brokers.mosquitto_path() is None:
        if not embedded_broker:
            err.print(
                "mosquitto not found: using the embedded amqtt broker (install mosquitto "
                "with 'apt-get install mosquitto' for ACLs enforced by the broker)"
            )
        console.print(f"embedded broker on 127.0.0.1:{port}\n{hint}")
        asyncio.run(brokers.run_embedded_forever(directory, port=port, cloud_password=password))
        return
    with brokers.MosquittoBroker(
        directory, accounts={"cloud": password}, port=port, persistence=True
    ) as running:
        console.print(f"mosquitto on {running.host}:{running.port} (config {running.config_path})")
        console.print(hint)
        try:
            running.wait()
        except KeyboardInterrupt:
            console.print("stopping broker")


@broker_app.command("certs")
def broker_certs(
    devices: Annotated[list[str], typer.Argument(help="Device ids to issue client certs for.")],
) -> None:
    """A local CA, a server certificate and per-device client certificates."""
    from entitle.certs import issue_local_pki

    settings = _settings()
    out = issue_local_pki(settings.data_dir / "pki", devices=devices)
    console.print(f"certificates written to {out}")


# --- cloud ------------------------------------------------------------------
@cloud_app.command("serve")
def cloud_serve(verbose: Verbose = False) -> None:
    """The API, dashboard, MQTT bridge and jobs."""
    import uvicorn

    from cloud.app import create_app
    from entitle.broker import MosquittoAccounts

    _logging(verbose)
    settings = _settings()
    broker_dir = settings.data_dir / "broker"
    accounts = MosquittoAccounts(broker_dir) if (broker_dir / "passwd").exists() else None
    if accounts is None:
        err.print(
            f"no broker directory at {broker_dir}: device credentials will not reach a "
            "broker (start one with 'entitle broker run')"
        )
    application = create_app(settings, accounts=accounts)
    console.print(f"API docs: http://{settings.http_host}:{settings.http_port}/docs")
    console.print(
        "the API wants a key: 'entitle cloud apikey create --name NAME', "
        "sent as 'Authorization: Bearer KEY'",
        markup=False,
    )
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info" if verbose else "warning",
    )


apikey_app = typer.Typer(no_args_is_help=True, help="API keys of the REST API.")
cloud_app.add_typer(apikey_app, name="apikey")


def _utc(epoch: int | None) -> str:
    import datetime

    if epoch is None:
        return ""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for (shown by 'list').")],
) -> None:
    """Create an API key and print it, once: only its hash is stored."""
    import time

    from cloud.apikeys import create_api_key
    from cloud.store import Store

    settings = _settings()
    try:
        with Store.open(settings.effective_database_url) as store:
            new = create_api_key(store, name=name, now=int(time.time()))
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    err.print(
        f"API key {new.id} ({new.name}) created. It is shown only now: keep it secret and "
        "send it as 'Authorization: Bearer KEY'."
    )
    typer.echo(new.key)  # alone on stdout: KEY=$(entitle cloud apikey create --name ci)


@apikey_app.command("list")
def apikey_list() -> None:
    """The API keys (id, name, public prefix, role), revoked ones included."""
    from cloud.apikeys import list_api_keys
    from cloud.store import Store

    settings = _settings()
    with Store.open(settings.effective_database_url) as store:
        rows = list_api_keys(store)
    table = Table(title=f"API keys ({len(rows)})", title_justify="left")
    for column in ("id", "name", "prefix", "role", "created (UTC)", "revoked (UTC)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            f"{row.prefix}…",
            row.role,
            _utc(row.created_at),
            _utc(row.revoked_at),
        )
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id (see 'list').")],
) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    import time

    from cloud.apikeys import revoke_api_key
    from cloud.errors import UnknownApiKey
    from cloud.store import Store

    settings = _settings()
    try:
        with Store.open(settings.effective_database_url) as store:
            row = revoke_api_key(store, key_id, now=int(time.time()))
    except UnknownApiKey as exc:
        raise _fail(str(exc), code=1) from exc
    console.print(f"API key {row.id} ({row.name}) revoked at {_utc(row.revoked_at)}")


# --- agent ------------------------------------------------------------------
def _agent_paths(settings: Settings) -> tuple[str, Path, Path]:
    if not settings.device_id:
        raise _fail("set ENTITLE_DEVICE_ID to this device's id")
    data_dir = settings.agent_dir()
    socket_path = settings.api_socket or data_dir / "agent.sock"
    return settings.device_id, data_dir, socket_path


@agent_app.command("run")
def agent_run(verbose: Verbose = False) -> None:
    """The on-device agent: verify, store and enforce entitlements."""
    from agent.runtime import open_agent
    from agent.session import Connection
    from agent.store import StoreError

    _logging(verbose)
    settings = _settings()
    device_id, data_dir, socket_path = _agent_paths(settings)
    address = settings.broker
    if address.password is None and settings.broker_cert_file is None:
        raise _fail(
            "no MQTT credentials: set ENTITLE_BROKER_PASSWORD_FILE (or put the password in "
            "the URL), or use mqtts:// with ENTITLE_BROKER_CERT_FILE/_KEY_FILE"
        )
    connection = Connection(
        host=address.host,
        port=address.port,
        username=address.username or device_id,
        password=address.password.get_secret_value() if address.password else None,
        protocol=settings.mqtt_protocol,
        tls=address.tls,
        ca_file=settings.broker_ca_file,
        cert_file=settings.broker_cert_file,
        key_file=settings.broker_key_file,
    )
    root = settings.root_keyset_file.read_bytes() if settings.root_keyset_file else None
    try:
        agent = open_agent(
            device_id=device_id,
            data_dir=data_dir,
            connection=connection,
            root_keyset=root,
            skew=settings.clock_skew_s,
            api_socket=socket_path,
            installation_id=settings.installation_id,
        )
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    try:
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        pass
    finally:
        agent.store.close()


@agent_app.command("check")
def agent_check(feature: str) -> None:
    """Exit 0 if FEATURE is allowed now, 1 if not; print why."""
    import time

    import httpx

    from agent.store import Store, StoreError

    settings = _settings()
    device_id, data_dir, socket_path = _agent_paths(settings)
    allowed: bool
    if socket_path.exists():
        try:
            transport = httpx.HTTPTransport(uds=str(socket_path))
            with httpx.Client(transport=transport, base_url="http://agent", timeout=5) as client:
                answer = client.get(f"/features/{feature}").json()
            allowed, reason = bool(answer["allowed"]), str(answer["reason"])
            source = "running agent"
        except httpx.HTTPError:
            socket_path = Path("/nonexistent")
    if not socket_path.exists():
        try:
            with Store(data_dir / "agent.db", read_only=True) as store:
                state = store.load(device_id=device_id, skew=settings.clock_skew_s)
        except StoreError as exc:
            raise _fail(str(exc)) from exc
        if state is None:
            allowed, reason = False, "device not provisioned"
        else:
            allowed, reason = state.feature(feature, local_now=int(time.time()))
        source = "agent store (agent not running)"
    verdict = "ALLOWED" if allowed else "DENIED"
    console.print(f"{feature}: {verdict} — {reason} [{source}]", markup=False, soft_wrap=True)
    raise typer.Exit(0 if allowed else 1)


# --- keys -------------------------------------------------------------------
@keys_app.command("init")
def keys_init(
    root_keys: Annotated[int, typer.Option(help="Number of root keys.")] = 1,
    threshold: Annotated[int, typer.Option(help="Root signatures needed to rotate.")] = 1,
) -> None:
    """Create the issuer keys (mode 0600) and the first signed key set."""
    from cloud.signer import Signer

    settings = _settings()
    signer = Signer.load_or_create(settings.keys_dir, root_keys=root_keys, threshold=threshold)
    _show_keyset(signer.keyset.to_json(), settings.keys_dir)


@keys_app.command("show")
def keys_show(
    export: Annotated[
        Path | None, typer.Option(help="Write the signed key set (device provisioning) here.")
    ] = None,
) -> None:
    """Show the current key set (public parts only)."""
    from cloud.signer import Signer

    settings = _settings()
    signer = Signer.load_or_create(settings.keys_dir)
    _show_keyset(signer.keyset.to_json(), settings.keys_dir)
    if export is not None:
        export.write_bytes(signer.keyset_bytes)
        console.print(f"signed key set written to {export}")


@keys_app.command("rotate")
def keys_rotate(
    new_root: Annotated[bool, typer.Option(help="Replace the root keys too.")] = False,
    new_epoch: Annotated[
        bool, typer.Option(help="Start a new token counter epoch (after a key theft).")
    ] = False,
) -> None:
    """Publish key set version+1, signed by old and new root keys."""
    from cloud.signer import Signer

    settings = _settings()
    signer = Signer.load_or_create(settings.keys_dir)
    signer.rotate(new_root=new_root, new_epoch=new_epoch)
    _show_keyset(signer.keyset.to_json(), settings.keys_dir)
    console.print("a running cloud publishes the new key set on its next start")


def _show_keyset(info: dict[str, Any], where: Path) -> None:
    table = Table(title=f"key set v{info['version']} (epoch {info['epoch']}) in {where}")
    table.add_column("role")
    table.add_column("kid")
    for role in ("root", "token"):
        for kid in info[role]:
            table.add_row(role, kid)
    console.print(table)
    console.print(f"root threshold: {info['threshold']}")


# --- token ------------------------------------------------------------------
@token_app.command("inspect")
def token_inspect(
    source: Annotated[str, typer.Argument(help="Token file, or - for standard input.")],
    keys: Annotated[
        Path | None, typer.Option(help="Signed key set file to verify against.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device id the token must name.")] = None,
    now: Annotated[int | None, typer.Option(help="Verify at this epoch second.")] = None,
) -> None:
    """Decode a token to JSON; with --keys also verify it (exit 1 with the reason)."""
    import time

    from protocol.cose import decode_sign1
    from protocol.errors import UntrustedDataError
    from protocol.keyset import trust_root
    from protocol.token import MAX_TOKEN_BYTES, parse_claims, verify_token

    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    data = _maybe_base64(data)
    try:
        msg = decode_sign1(data, max_size=MAX_TOKEN_BYTES)
        claims = parse_claims(msg.payload)
        out: dict[str, Any] = {"kid": msg.kid.hex(), "claims": claims.to_json()}
        if keys is not None:
            keyset = trust_root(_maybe_base64(keys.read_bytes()))
            verify_token(
                data,
                key_for=keyset.token_key,
                device_id=device or claims.sub,
                now=int(time.time()) if now is None else now,
            )
            out["verified"] = True
    except UntrustedDataError as exc:
        console.print(
            json.dumps({"error": exc.reason, "detail": str(exc)}), markup=False, soft_wrap=True
        )
        raise typer.Exit(1) from exc
    console.print_json(json.dumps(out))


def _maybe_base64(data: bytes) -> bytes:
    """Token bytes from what a user has at hand.

    Accepts raw CBOR, hex, base64 (standard or URL-safe, as the API returns
    it), or a cose-wg example JSON file (its ``output.cbor``).
    """
    import binascii

    stripped = data.strip()
    if stripped.startswith(b"{"):
        try:
            example = json.loads(stripped.decode("utf-8-sig"))
            return bytes.fromhex(example["output"]["cbor"])
        except (ValueError, KeyError, TypeError):
            return data
    text = stripped.decode("ascii", "replace")
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            return decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
    return data


# --- config -----------------------------------------------------------------
@config_app.command("show")
def config_show() -> None:
    """The effective configuration (secrets redacted)."""
    console.print_json(json.dumps(_settings().redacted()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
