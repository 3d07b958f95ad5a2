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
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
        log_level="info" if verbose else "warning",
    )


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
    if address.password is None:
        raise _fail("no MQTT password: set ENTITLE_BROKER_PASSWORD_FILE or put it in the URL")
    connection = Connection(
        host=address.host,
        port=address.port,
        username=address.username or device_id,
        password=address.password.get_secret_value(),
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
    console.print(f"{feature}: {'ALLOWED' if allowed else 'DENIED'} — {reason} [{source}]")
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
        console.print(json.dumps({"error": exc.reason, "detail": str(exc)}))
        raise typer.Exit(1) from exc
    console.print_json(json.dumps(out))


def _maybe_base64(data: bytes) -> bytes:
    """Accept raw CBOR or base64 text (as the API returns it)."""
    stripped = data.strip()
    if stripped and all(
        c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_"
        for c in stripped
    ):
        try:
            return base64.b64decode(stripped + b"=" * (-len(stripped) % 4), altchars=b"-_")
        except ValueError:
            return data
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
