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
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from agent.cli import HELP as AGENT_HELP
from agent.cli import main as agent_main

if TYPE_CHECKING:
    from rich.console import Console

    from agent.firmware import Emulator
    from cloud.settings import CloudSettings
    from common.settings import BrokerAddress, BrokerClientSettings, EntitleSettings

S = TypeVar("S", bound="EntitleSettings")


def _firmware_emulator(kind: str, recordings: Path) -> Emulator:
    """The in-process firmware emulator ``entitle agent run --firmware-kind`` runs (demos)."""
    from firmware_stubs import make_emulator

    return make_emulator(kind, recordings=recordings)


# `entitle agent run|check ...` is entitle-agent's own argparse command (agent.cli.main),
# plus the emulators: its options and --help pass through to it untouched
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


__all__ = ["app", "main"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
broker_app = typer.Typer(no_args_is_help=True, help="The MQTT broker.")
cloud_app = typer.Typer(no_args_is_help=True, help="The cloud service.")
agent_app = typer.Typer(no_args_is_help=True, help=AGENT_HELP)
keys_app = typer.Typer(no_args_is_help=True, help="Issuer keys and key sets.")
token_app = typer.Typer(no_args_is_help=True, help="Entitlement tokens.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
sim_app = typer.Typer(no_args_is_help=True, help="Simulated fleets.")
for sub, name in (
    (broker_app, "broker"),
    (cloud_app, "cloud"),
    (agent_app, "agent"),
    (keys_app, "keys"),
    (token_app, "token"),
    (config_app, "config"),
    (sim_app, "sim"),
):
    app.add_typer(sub, name=name)


@agent_app.command("run", context_settings=_PASS_THROUGH, add_help_option=False)
def agent_run(ctx: typer.Context) -> None:
    """The on-device agent (entitle-agent run; --firmware-kind alone runs an emulator)."""
    raise typer.Exit(
        agent_main(["run", *ctx.args], emulator=_firmware_emulator, prog="entitle agent")
    )


@agent_app.command("check", context_settings=_PASS_THROUGH, add_help_option=False)
def agent_check(ctx: typer.Context) -> None:
    """Exit 0 if FEATURE is allowed now, 1 if not; print why (entitle-agent check)."""
    raise typer.Exit(agent_main(["check", *ctx.args], prog="entitle agent"))


class _LazyConsole:
    """A rich Console made on first use: ``entitle agent run`` never prints through one,
    and importing rich at start cost the agent 3 MB of its RSS budget."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def real(self) -> Console:
        """The Console itself, for code that keeps it (progress displays)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _real(proxy: Console) -> Console:
    return cast(_LazyConsole, proxy).real()


console = cast("Console", _LazyConsole())
err = cast("Console", _LazyConsole(stderr=True))
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _fail(*lines: str, code: int = 2) -> typer.Exit:
    """Print ``error: <line>`` for each line on stderr; the Exit to raise.

    Plain click output, not rich: it is the agent's error path too, and a
    message is printed as it is (no markup, no wrapping).
    """
    for line in lines:
        typer.secho("error: ", fg="red", err=True, nl=False)
        typer.echo(line, err=True)
    return typer.Exit(code)


def _broker_address(settings: BrokerClientSettings, *, whose: str) -> BrokerAddress:
    """The broker URL with the password file read, or a sentence saying what to fix."""
    try:
        return settings.broker
    except OSError as exc:
        raise _fail(
            f"ENTITLE_BROKER_PASSWORD_FILE: cannot read {settings.broker_password_file} "
            f"({exc.strerror}); name a file holding {whose} MQTT password"
        ) from None


def _settings(kind: type[S]) -> S:
    """The settings of one process (only its own fields are loaded), or exit 2 with
    one line per problem."""
    from common.settings import ConfigError

    try:
        return kind.load()
    except ConfigError as exc:
        raise _fail(*exc.problems) from None


def _cloud_settings() -> CloudSettings:
    from cloud.settings import CloudSettings

    return _settings(CloudSettings)


# --- demo -------------------------------------------------------------------
@app.command()
def demo(
    devices: Annotated[int, typer.Option(help="Simulated devices (1-10).")] = 3,
    cycles: Annotated[int, typer.Option(help="Grant/revoke cycles; 0 runs until Ctrl-C.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between changes.")] = 2.0,
    embedded_broker: Annotated[
        bool, typer.Option("--embedded-broker", help="Use amqtt even if mosquitto exists.")
    ] = False,
    fast_forward: Annotated[
        int,
        typer.Option(
            "--fast-forward",
            metavar="DAYS",
            help="Buy a subscription, then move a test clock DAYS days, day by day "
            "(renewal notice, charge, renewal or expiry on the devices).",
        ),
    ] = 0,
    card: Annotated[
        str, typer.Option(help="With --fast-forward: the card on file, 'ok' or 'declined'.")
    ] = "ok",
    engine: Annotated[
        str, typer.Option(help="mosquitto, or nats (a 3-node cluster on loopback).")
    ] = "mosquitto",
    start: Annotated[
        str | None,
        typer.Option(help="With --fast-forward: the purchase day, YYYY-MM-DD (UTC); default now."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Broker + cloud + simulated devices, with live enforcement."""
    from entitle.demo import run_demo

    _logging(verbose)
    if not 1 <= devices <= 10:
        raise _fail("--devices must be 1..10 (one installation has at most 10 controllers)")
    if not 0 <= fast_forward <= 3660:
        raise _fail("--fast-forward must be 1..3660 days")
    if card not in ("ok", "declined"):
        raise _fail("--card must be 'ok' or 'declined'")
    if engine not in ("mosquitto", "nats"):
        raise _fail(f"--engine must be mosquitto or nats, not {engine!r}")
    if engine == "nats" and (fast_forward or embedded_broker):
        raise _fail("--engine nats runs the grant/revoke demo only (no --fast-forward, no amqtt)")
    start_at = None
    if start is not None:
        from datetime import UTC, datetime

        try:
            day = datetime.strptime(start, "%Y-%m-%d").replace(hour=12, tzinfo=UTC)
        except ValueError:
            raise _fail(f"--start {start!r} is not a day like 2026-01-31") from None
        start_at = int(day.timestamp())
    try:
        if fast_forward:
            from entitle.fastforward import run_fast_forward

            asyncio.run(
                run_fast_forward(
                    devices=devices,
                    days=fast_forward,
                    card=card,
                    embedded=embedded_broker,
                    console=_real(console),
                    start=start_at,
                )
            )
            return
        asyncio.run(
            run_demo(
                devices=devices,
                cycles=cycles,
                interval=interval,
                embedded=embedded_broker,
                console=_real(console),
                engine=engine,
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
    engine: Annotated[
        str, typer.Option(help="mosquitto (one node) or nats (a cluster; docs/nats.md).")
    ] = "mosquitto",
    nodes: Annotated[int, typer.Option(help="NATS nodes on this machine (--engine nats).")] = 3,
    verbose: Verbose = False,
) -> None:
    """Mosquitto with the dynamic-security plugin, or a NATS cluster: device logins
    added at run time."""
    from broker import embedded, mosquitto
    from broker.settings import BrokerSettings

    _logging(verbose)
    settings = _settings(BrokerSettings)
    directory = settings.broker_dir
    directory.mkdir(parents=True, exist_ok=True)
    secret_file = directory / "cloud.secret"
    if not secret_file.exists():
        secret_file.touch(mode=0o600)
        secret_file.write_text(secrets.token_urlsafe(24))
    password = secret_file.read_text().strip()
    if engine not in ("mosquitto", "nats"):
        raise _fail(f"--engine must be mosquitto or nats, not {engine!r}")
    if engine == "nats":
        _run_nats(
            directory / "nats",
            password=password,
            secret_file=secret_file,
            nodes=nodes,
            mqtt_port=port or None,
        )
        return
    port = port or mosquitto.find_free_port()
    hint = (
        f"cloud: ENTITLE_BROKER_URL=mqtt://cloud@127.0.0.1:{port} "
        f"ENTITLE_BROKER_PASSWORD_FILE={secret_file}"
    )
    if embedded_broker or mosquitto.mosquitto_path() is None:
        if not embedded_broker:
            err.print(
                "mosquitto not found: using the embedded amqtt broker (install mosquitto "
                "with 'apt-get install mosquitto' for ACLs enforced by the broker)"
            )
        console.print(f"embedded broker on 127.0.0.1:{port}\n{hint}")
        asyncio.run(embedded.run_embedded_forever(directory, port=port, cloud_password=password))
        return
    with mosquitto.MosquittoBroker(
        directory, accounts={"cloud": password}, port=port, persistence=True
    ) as running:
        console.print(f"mosquitto on {running.host}:{running.port} (config {running.config_path})")
        console.print(hint)
        try:
            running.wait()
        except KeyboardInterrupt:
            console.print("stopping broker")


def _run_nats(
    directory: Path, *, password: str, secret_file: Path, nodes: int, mqtt_port: int | None
) -> None:
    """``entitle broker run --engine nats``: the cluster until Ctrl-C."""
    from broker.errors import BrokerError
    from broker.nats import NatsCluster

    cluster = NatsCluster(directory, accounts={"cloud": password}, nodes=nodes, mqtt_port=mqtt_port)
    try:
        cluster.start()
    except BrokerError as exc:
        raise _fail(str(exc)) from exc
    try:
        console.print(f"nats: {nodes} node(s), configs in {directory}")
        urls = ",".join(f"mqtt://{cluster.host}:{n.mqtt}" for n in cluster.nodes)
        cloud_env = cluster.cloud_env("cloud", None)  # the password is in its file
        cloud_env["ENTITLE_BROKER_PASSWORD_FILE"] = str(secret_file)
        shown = " ".join(f"{name}={value}" for name, value in cloud_env.items())
        console.print(f"cloud: {shown}", markup=False)
        console.print(f"agents: ENTITLE_MQTT_PROTOCOL=4 ENTITLE_BROKER_URL={urls}", markup=False)
        cluster.wait()
    except KeyboardInterrupt:
        console.print("stopping the cluster")
    finally:
        cluster.stop()


@broker_app.command("certs")
def broker_certs(
    devices: Annotated[list[str], typer.Argument(help="Device ids to issue client certs for.")],
) -> None:
    """A local CA, a server certificate and per-device client certificates."""
    from broker.certs import issue_local_pki
    from broker.settings import BrokerSettings

    settings = _settings(BrokerSettings)
    out = issue_local_pki(settings.pki_dir, devices=devices)
    console.print(f"certificates written to {out}")


# --- cloud ------------------------------------------------------------------
def _serve_workers(settings: CloudSettings, workers: int, verbose: bool) -> None:
    """Run ``workers`` cloud processes and restart any that dies, until interrupted.

    Worker i (1-based) listens on ``http_port + i - 1`` (a reverse proxy balances
    them; each answers its own ``/metrics``), receives health as MQTT client id
    ``<login>-i`` (its own persistent session in the ``$share`` group, so a worker
    restarted after a crash gets back what it had not acked), and only worker 1
    runs the jobs (ENTITLE_RUN_JOBS=false for the others). Schema and issuer keys
    are made here first, once.
    """
    import os
    import signal
    import subprocess
    import time

    from cloud.database import Store
    from cloud.devices.signer import Signer

    Store.open(settings.effective_database_url).close()
    Signer.load_or_create(settings.keys_dir)
    login = settings.broker.username or "cloud"
    command = [sys.executable, "-m", "entitle.cli", "cloud", "serve", *(["-v"] * verbose)]

    def spawn(i: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "ENTITLE_HTTP_PORT": str(settings.http_port + i - 1),
            "ENTITLE_MQTT_CLIENT_ID": f"{login}-{i}",
            "ENTITLE_RUN_JOBS": "true" if i == 1 else "false",
        }
        console.print(f"worker {i}: http://{settings.http_host}:{env['ENTITLE_HTTP_PORT']}")
        return subprocess.Popen(command, env=env)

    running = {i: spawn(i) for i in range(1, workers + 1)}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
        for i, process in list(running.items()):
            if process.poll() is not None and not stopping:
                console.print(f"worker {i} exited ({process.returncode}); restarting it")
                running[i] = spawn(i)
    for process in running.values():
        process.terminate()
    for process in running.values():
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


@cloud_app.command("serve")
def cloud_serve(
    verbose: Verbose = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Worker processes sharing the health stream (ports http_port, +1, ...)."
        ),
    ] = 1,
) -> None:
    """The API, dashboard, MQTT bridge and jobs."""
    _logging(verbose)
    settings = _cloud_settings()
    _broker_address(settings, whose="the cloud's")  # read once here: a sentence, not a trace
    if workers > 1:
        _serve_workers(settings, workers, verbose)
        return
    _serve_one(settings, verbose)


@cloud_app.command("jobs")
def cloud_jobs(verbose: Verbose = False) -> None:
    """The background jobs alone: renewals and expiry, token refresh and re-signing,
    health retention and gap repair, tickets, the mail outbox.

    It publishes tokens and commands but takes no share of the health stream (run it
    beside 'cloud serve' workers started with ENTITLE_RUN_JOBS=false). It answers
    /healthz and /metrics (job runs, backlogs) on its own port: keep that port off the
    reverse proxy's pool.
    """
    _logging(verbose)
    settings = _cloud_settings().model_copy(update={"run_jobs": True, "ingest_health": False})
    _broker_address(settings, whose="the cloud's")
    _serve_one(settings, verbose)


def _serve_one(settings: CloudSettings, verbose: bool) -> None:
    """One cloud process in the foreground (uvicorn on http_host:http_port)."""
    import uvicorn

    from broker.passwd import PASSWD_NAME, PasswdFileAccounts
    from cloud.app import create_app

    broker_dir = settings.data_dir / "broker"
    # The embedded broker reads device logins from a password file beside it;
    # Mosquitto gets them over $CONTROL with the cloud's own login (the default).
    accounts = None
    if (broker_dir / PASSWD_NAME).exists():
        accounts = PasswdFileAccounts(broker_dir)
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
    user: Annotated[
        str | None,
        typer.Option(help="E-mail of the user the key acts as; none: a bare admin key."),
    ] = None,
) -> None:
    """Create an API key and print it, once: only its hash is stored."""
    import time

    from cloud.accounts.apikeys import create_api_key
    from cloud.accounts.users import user_by_email
    from cloud.database import Store

    settings = _cloud_settings()
    try:
        with Store.open(settings.effective_database_url) as store:
            user_id = None
            if user is not None:
                with store.transaction() as tx:
                    row = user_by_email(tx, user)
                    user_id = None if row is None else row.id
                if user_id is None:
                    raise _fail(f"no user {user}: see 'entitle cloud user list'", code=1)
            new = create_api_key(store, name=name, now=int(time.time()), user_id=user_id)
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
    from cloud.accounts.apikeys import list_api_keys
    from cloud.database import Store

    settings = _cloud_settings()
    with Store.open(settings.effective_database_url) as store:
        rows = list_api_keys(store)
    from rich.table import Table

    table = Table(title=f"API keys ({len(rows)})", title_justify="left")
    for column in ("id", "name", "prefix", "role", "user", "created (UTC)", "revoked (UTC)"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            f"{row.prefix}…",
            "(the user's)" if row.user_id is not None else row.role,
            "" if row.user_id is None else str(row.user_id),
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

    from cloud.accounts.apikeys import revoke_api_key
    from cloud.database import Store
    from cloud.errors import UnknownApiKey

    settings = _cloud_settings()
    try:
        with Store.open(settings.effective_database_url) as store:
            row = revoke_api_key(store, key_id, now=int(time.time()))
    except UnknownApiKey as exc:
        raise _fail(str(exc), code=1) from exc
    console.print(f"API key {row.id} ({row.name}) revoked at {_utc(row.revoked_at)}")


user_app = typer.Typer(no_args_is_help=True, help="Users of the dashboard and API, and companies.")
cloud_app.add_typer(user_app, name="user")


def _read_password(password_file: Path | None) -> str:
    """From the file (first line), else a hidden prompt typed twice; never an argument."""
    if password_file is not None:
        try:
            lines = password_file.read_text().splitlines()
        except OSError as exc:
            raise _fail(f"cannot read the password file: {exc.strerror}") from exc
        return lines[0] if lines else ""
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="Login e-mail (unique).")],
    role: Annotated[str, typer.Option(help="admin, cs_admin, support, partner or owner.")],
    name: Annotated[str | None, typer.Option(help="Display name; default the e-mail.")] = None,
    company: Annotated[
        str | None, typer.Option(help="Partner id of the user's company (partners only).")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the password; default: a hidden prompt.")
    ] = None,
) -> None:
    """Create a user; the password comes from a prompt or a file, never the command line."""
    import time

    from cloud.accounts.rules import Role
    from cloud.accounts.users import create_user, find_companies
    from cloud.database import Store
    from cloud.errors import CloudError

    try:
        user_role = Role(role)
    except ValueError:
        raise _fail(f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}") from None
    password = _read_password(password_file)
    settings = _cloud_settings()
    try:
        with Store.open(settings.effective_database_url) as store, store.transaction() as tx:
            company_id = None
            if company is not None:
                found = find_companies(tx, partner_id=company, limit=1)
                if not found:
                    raise _fail(f"no company with partner id {company}", code=1)
                company_id = found[0].id
            row = create_user(
                tx,
                email=email,
                name=name or email,
                password=password,
                role=user_role,
                company_id=company_id,
                actor="system:cli",
                now=int(time.time()),
            )
            shown = (row.id, row.email, row.role.value)
    except CloudError as exc:
        raise _fail(str(exc), code=1) from exc
    console.print(f"user {shown[0]} ({shown[1]}) created, role {shown[2]}")


@user_app.command("list")
def user_list() -> None:
    """The users (id, e-mail, role, company, blacklisted, disabled)."""
    from cloud.accounts.users import find_users
    from cloud.database import Store

    settings = _cloud_settings()
    with Store.open(settings.effective_database_url) as store, store.transaction() as tx:
        rows = [
            (r.id, r.email, r.role.value, r.company_id, r.blacklisted, r.disabled_at)
            for r in find_users(tx, limit=10_000)
        ]
    from rich.table import Table

    table = Table(title=f"users ({len(rows)})", title_justify="left")
    for column in ("id", "e-mail", "role", "company", "blacklisted", "disabled (UTC)"):
        table.add_column(column)
    for user_id, email, role, company_id, blacklisted, disabled_at in rows:
        table.add_row(
            str(user_id),
            email,
            role,
            "" if company_id is None else str(company_id),
            "yes" if blacklisted else "",
            _utc(disabled_at),
        )
    console.print(table)


@user_app.command("company")
def user_company(
    name: Annotated[str, typer.Option(help="Company name.")],
    payment_type: Annotated[str, typer.Option(help="card (checkout) or invoice.")] = "card",
    partner_id: Annotated[
        str | None, typer.Option(help="The vendor's partner id; default generated.")
    ] = None,
) -> None:
    """Create a partner company; prints its partner id (for 'user create --company')."""
    import time

    from cloud.accounts.rules import PaymentType
    from cloud.accounts.users import create_company
    from cloud.database import Store
    from cloud.errors import CloudError

    try:
        kind = PaymentType(payment_type)
    except ValueError:
        raise _fail("--payment-type is card or invoice") from None
    settings = _cloud_settings()
    try:
        with Store.open(settings.effective_database_url) as store, store.transaction() as tx:
            row = create_company(
                tx,
                name=name,
                partner_id=partner_id,
                payment_type=kind,
                actor="system:cli",
                now=int(time.time()),
            )
            shown = (row.id, row.partner_id)
    except CloudError as exc:
        raise _fail(str(exc), code=1) from exc
    console.print(f"company {shown[0]} created, partner id {shown[1]}")


# --- keys -------------------------------------------------------------------
@keys_app.command("init")
def keys_init(
    root_keys: Annotated[int, typer.Option(help="Number of root keys.")] = 1,
    threshold: Annotated[int, typer.Option(help="Root signatures needed to rotate.")] = 1,
) -> None:
    """Create the issuer keys (mode 0600) and the first signed key set."""
    from cloud.devices.signer import Signer

    settings = _cloud_settings()
    signer = Signer.load_or_create(settings.keys_dir, root_keys=root_keys, threshold=threshold)
    _show_keyset(signer.keyset.to_json(), settings.keys_dir)


@keys_app.command("show")
def keys_show(
    export: Annotated[
        Path | None, typer.Option(help="Write the signed key set (device provisioning) here.")
    ] = None,
) -> None:
    """Show the current key set (public parts only)."""
    from cloud.devices.signer import Signer

    settings = _cloud_settings()
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
    from cloud.devices.signer import Signer

    settings = _cloud_settings()
    signer = Signer.load_or_create(settings.keys_dir)
    signer.rotate(new_root=new_root, new_epoch=new_epoch)
    _show_keyset(signer.keyset.to_json(), settings.keys_dir)
    console.print("a running cloud publishes the new key set on its next start")


def _show_keyset(info: dict[str, Any], where: Path) -> None:
    from rich.table import Table

    table = Table(title=f"key set v{info['version']} (epoch {info['epoch']}) in {where}")
    table.add_column("role")
    table.add_column("kid")
    for role in ("root", "token"):
        for kid in info[role]:
            table.add_row(role, kid)
    console.print(table)
    console.print(f"root threshold: {info['threshold']}")


# --- token ------------------------------------------------------------------
_MAX_INPUT_BYTES = 1 << 20  # far above any token or key set, in any of the encodings read
_TOKEN_HINT = (
    "pass the token itself: the retained message of entitle/v1/dev/ID/entitlement "
    "(raw bytes), the JSON of GET /api/v1/devices/ID/entitlement or its token_b64 value, "
    "or - to read standard input"
)
_KEYS_HINT = (
    "pass a signed key set: 'entitle keys show --export FILE' writes one, and "
    "GET /api/v1/keyset answers one (its JSON or its keyset_b64 value); the JWK Set of "
    "GET /api/v1/keys is not it"
)


@token_app.command("inspect")
def token_inspect(
    source: Annotated[str, typer.Argument(help="Token file, or - for standard input.")],
    keys: Annotated[
        Path | None, typer.Option(help="Signed key set file to verify against.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device id the token must name.")] = None,
    now: Annotated[int | None, typer.Option(help="Verify at this epoch second.")] = None,
) -> None:
    """Decode a token to JSON; with --keys also verify it (exit 1 with the reason).

    The token may be raw CBOR, hex, base64, the JSON of
    GET /api/v1/devices/ID/entitlement or a cose-wg example file.
    """
    import time

    from protocol.cose import decode_sign1
    from protocol.errors import UntrustedDataError
    from protocol.keyset import trust_root
    from protocol.token import MAX_TOKEN_BYTES, parse_claims, verify_token

    name = "standard input" if source == "-" else source
    data = _user_bytes(_read_input(source, _TOKEN_HINT), name=name, what="token", hint=_TOKEN_HINT)
    keyset = None
    if keys is not None:
        raw = _read_input(str(keys), _KEYS_HINT)
        try:
            keyset = trust_root(_user_bytes(raw, name=str(keys), what="key set", hint=_KEYS_HINT))
        except UntrustedDataError as exc:
            raise _fail(f"{keys} is not a key set ({exc.reason}: {exc}); {_KEYS_HINT}") from None
    try:
        msg = decode_sign1(data, max_size=MAX_TOKEN_BYTES)
        claims = parse_claims(msg.payload)
        out: dict[str, Any] = {"kid": msg.kid.hex(), "claims": claims.to_json()}
        if keyset is not None:
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


def _read_input(source: str, hint: str) -> bytes:
    """The bytes of file ``source`` (``-``: standard input), or a sentence saying why not."""
    name = "standard input" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read(_MAX_INPUT_BYTES + 1)
        else:
            with Path(source).open("rb") as file:
                data = file.read(_MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _fail(f"cannot read {name}: {exc.strerror or exc}; {hint}") from None
    if not data.strip():
        raise _fail(f"{name} is empty; {hint}")
    if len(data) > _MAX_INPUT_BYTES:
        raise _fail(f"{name} is over {_MAX_INPUT_BYTES >> 20} MiB: too large; {hint}")
    return data


_API_FIELDS = {"token": "token_b64", "key set": "keyset_b64"}


def _user_bytes(data: bytes, *, name: str, what: str, hint: str) -> bytes:
    """Token or key set bytes from what a user has at hand.

    Accepts raw CBOR, hex, base64 (standard or URL-safe, as the API returns
    it), the API's JSON holding it (``token_b64``, ``keyset_b64``), or
    a cose-wg example JSON file (its ``output.cbor``). Other JSON is a
    mistake worth a sentence, not a CBOR error.
    """
    import binascii

    field = _API_FIELDS[what]
    stripped = data.strip()
    if stripped[:1] in (b"{", b"["):  # never the first byte of a COSE message
        try:
            document = json.loads(stripped.decode("utf-8-sig"))
        except (ValueError, RecursionError):
            document = None  # not JSON (or too deep for it): let the decoder say what it is
        if document is not None:
            if isinstance(document, dict) and isinstance(document.get(field), str):
                try:
                    return base64.b64decode(document[field], validate=True)
                except binascii.Error:
                    raise _fail(f"{name}: its {field} is not base64; {hint}") from None
            try:
                return bytes.fromhex(document["output"]["cbor"])
            except (KeyError, TypeError, ValueError):
                keys = ", ".join(sorted(document)[:6]) if isinstance(document, dict) else ""
                shape = f"JSON with {keys}" if keys else "JSON"
                raise _fail(f"{name} holds {shape}, not a {what}; {hint}") from None
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
    from entitle.config import AllSettings

    console.print_json(json.dumps(_settings(AllSettings).redacted()))


# --- sim --------------------------------------------------------------------
@sim_app.command("fleet")
def sim_fleet(
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, help="Simulated devices.")] = 10,
    mix: Annotated[
        str, typer.Option(help="Device kinds by weight.")
    ] = "gateway:60,camera:30,counter:10",
    faults: Annotated[str, typer.Option(help="Share of devices with a fault, e.g. 5%.")] = "5%",
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between health reports.")
    ] = 10.0,
    duration: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds to run after the ramp-up; default: until ^C."),
    ] = None,
    processes: Annotated[
        int | None, typer.Option(min=1, help="Worker processes; default: one per 2,500 devices.")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Start a fresh Mosquitto and cloud for the fleet.")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option(help="The cloud's API; default from ENTITLE_HTTP_HOST/PORT.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="ENTITLE_API_KEY", help="An admin API key.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="The cloud's database, to count stored reports.")
    ] = None,
    prefix: Annotated[str, typer.Option(help="Device id prefix.")] = "sim",
    verbose: Verbose = False,
) -> None:
    """Real agents against firmware emulators, against the configured broker and cloud."""
    from simulators.fleet import parse_faults, parse_mix, plan_fleet
    from simulators.fleet_view import FleetOptions, simulate

    _logging(verbose)
    settings = _cloud_settings()
    try:
        plans = plan_fleet(
            devices=devices, mix=parse_mix(mix), fault_fraction=parse_faults(faults), prefix=prefix
        )
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    options = FleetOptions(
        interval_s=interval,
        duration_s=duration,
        processes=processes,
        local=local,
        api_url=api_url or f"http://{settings.http_host}:{settings.http_port}",
        api_key=api_key,
        database_url=database_url or (settings.database_url if not local else None),
        data_dir=None,
    )
    try:
        code = asyncio.run(simulate(plans, options, _real(console)))
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
