"""``entitle-agent``: the agent's own command (``run``, ``check``), for a gateway.

The development tool mounts the same app as ``entitle agent`` (one implementation);
there it also gets the in-process firmware emulators (``--firmware-kind`` without
``--serial-port``), which are a development aid and not part of the agent's install.
Heavy imports happen inside each command: ``entitle-agent --help`` loads typer only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from agent.firmware import Emulator, FirmwareClient
    from agent.settings import AgentSettings
    from common.settings import BrokerAddress

__all__ = ["EmulatorFactory", "app", "main", "make_app"]

KINDS = ("gateway", "camera", "counter")

EmulatorFactory = Callable[[str, Path], "Emulator"]
"""``(kind, recordings_dir)`` -> a firmware emulator of that kind, run in the agent's process."""

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")]


def _fail(*lines: str, code: int = 2) -> typer.Exit:
    """Print ``error: <line>`` for each line on stderr; the Exit to raise.

    Plain click output, not rich: a message is printed as it is (no markup, no
    wrapping), and rich would cost the agent 3 MB of its RSS budget.
    """
    for line in lines:
        typer.secho("error: ", fg="red", err=True, nl=False)
        typer.echo(line, err=True)
    return typer.Exit(code)


def _settings() -> AgentSettings:
    from agent.settings import AgentSettings
    from common.settings import ConfigError

    try:
        return AgentSettings.load()
    except ConfigError as exc:
        raise _fail(*exc.problems) from None


def _paths(settings: AgentSettings) -> tuple[str, Path, Path]:
    """The device id, the agent's data folder and its local API socket."""
    if not settings.device_id:
        raise _fail("set ENTITLE_DEVICE_ID to this device's id")
    data_dir = settings.agent_dir()
    socket_path = settings.api_socket or data_dir / "agent.sock"
    return settings.device_id, data_dir, socket_path


def _broker_address(settings: AgentSettings) -> BrokerAddress:
    """The broker URL with the password file read, or a sentence saying what to fix."""
    try:
        return settings.broker
    except OSError as exc:
        raise _fail(
            f"ENTITLE_BROKER_PASSWORD_FILE: cannot read {settings.broker_password_file} "
            f"({exc.strerror}); name a file holding this device's MQTT password"
        ) from None


def _firmware(
    *,
    port: str | None,
    kind: str | None,
    recordings: Path,
    emulator: EmulatorFactory | None,
) -> FirmwareClient | None:
    """The FirmwareClient for the serial port, or an in-process emulator of ``kind``."""
    if not port and kind is None:
        return None  # and pyserial is never imported
    from agent.firmware import FirmwareClient, InProcessLink, SerialLink
    from protocol.errors import FirmwareUnavailable

    if port:
        try:
            return FirmwareClient(SerialLink(port))
        except FirmwareUnavailable as exc:
            raise _fail(str(exc)) from exc
    assert kind is not None
    if emulator is None:
        raise _fail(
            f"--firmware-kind {kind} without --serial-port runs a firmware emulator, which "
            "entitle-agent does not include: name the firmware's serial port with "
            "--serial-port or ENTITLE_SERIAL_PORT (the emulators come with the development "
            "install: 'entitle agent run')"
        )
    return FirmwareClient(InProcessLink(emulator(kind, recordings)))


def make_app(*, emulator: EmulatorFactory | None = None) -> typer.Typer:
    """The agent's commands; ``emulator`` makes ``--firmware-kind`` alone run one in-process."""
    app = typer.Typer(
        no_args_is_help=True,
        add_completion=False,
        help="The on-device agent: verify, store and enforce entitlements; report health.",
    )

    @app.command("run")
    def run(
        verbose: Verbose = False,
        serial_port: Annotated[
            str | None, typer.Option(help="Firmware serial port, e.g. /dev/ttyUSB0.")
        ] = None,
        firmware_kind: Annotated[
            str | None,
            typer.Option(
                help="Device kind (gateway, camera, counter); without --serial-port it runs "
                "that kind's firmware emulator in-process (demos; 'entitle agent run' only)."
            ),
        ] = None,
        recordings_dir: Annotated[
            Path | None, typer.Option(help="Prune recordings here to the entitled retention.")
        ] = None,
        health_interval: Annotated[
            float | None, typer.Option(min=0.001, help="Seconds between health reports.")
        ] = None,
    ) -> None:
        """The on-device agent: verify, store and enforce entitlements; report health."""
        from agent.enforcers import FirmwareEnforcer, RetentionPruner
        from agent.runtime import Enforcer, open_agent
        from agent.session import Connection, quiet_closed_sockets
        from agent.store import StoreError

        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # the agent's own INFO lines are what a person watching it wants: connected to
        # which broker as which device, and each feature allowed or denied until when
        logging.getLogger("agent").setLevel(logging.INFO)
        settings = _settings()
        device_id, data_dir, socket_path = _paths(settings)
        kind = firmware_kind or settings.firmware_kind
        if kind is not None and kind not in KINDS:
            raise _fail(f"--firmware-kind {kind!r}: use gateway, camera or counter")
        recordings = recordings_dir or settings.recordings_dir
        firmware = _firmware(
            port=serial_port or settings.serial_port,
            kind=kind,
            recordings=recordings or data_dir / "recordings",
            emulator=emulator,
        )
        enforcers: list[Enforcer] = []
        if firmware is not None:
            enforcers.append(FirmwareEnforcer(firmware))
        if recordings is not None:
            enforcers.append(RetentionPruner(recordings))
        address = _broker_address(settings)
        if address.password is None and settings.broker_cert_file is None:
            raise _fail(
                "no MQTT credentials: set ENTITLE_BROKER_PASSWORD_FILE (or put the password in "
                "the URL), or use mqtts:// with ENTITLE_BROKER_CERT_FILE/_KEY_FILE"
            )
        connection = Connection(
            host=address.host,
            port=address.port,
            fallbacks=address.fallbacks,
            username=address.username or device_id,
            password=address.password.get_secret_value() if address.password else None,
            protocol=settings.mqtt_protocol,
            tls=address.tls,
            ca_file=settings.broker_ca_file,
            cert_file=settings.broker_cert_file,
            key_file=settings.broker_key_file,
        )
        try:
            root = settings.root_keyset_file.read_bytes() if settings.root_keyset_file else None
        except OSError as exc:
            raise _fail(
                f"ENTITLE_ROOT_KEYSET_FILE: cannot read {settings.root_keyset_file} "
                f"({exc.strerror}); export one with 'entitle keys show --export FILE'"
            ) from None
        try:
            agent = open_agent(
                device_id=device_id,
                data_dir=data_dir,
                connection=connection,
                root_keyset=root,
                skew=settings.clock_skew_s,
                api_socket=socket_path,
                installation_id=settings.installation_id,
                firmware=firmware,
                kind=kind,
                enforcers=enforcers,
                health_interval_s=health_interval or settings.health_interval_s,
            )
        except StoreError as exc:
            raise _fail(str(exc)) from exc

        async def serve() -> None:
            with quiet_closed_sockets(asyncio.get_running_loop()):
                await agent.run()

        try:
            asyncio.run(serve())
        except KeyboardInterrupt:
            pass
        finally:
            agent.close()

    @app.command("check")
    def check(feature: str) -> None:
        """Exit 0 if FEATURE is allowed now, 1 if not; print why."""
        import time

        import httpx

        from agent.store import Store, StoreError

        settings = _settings()
        device_id, data_dir, socket_path = _paths(settings)
        answer: dict[str, Any] | None = None
        if socket_path.exists():
            try:
                transport = httpx.HTTPTransport(uds=str(socket_path))
                with httpx.Client(
                    transport=transport, base_url="http://agent", timeout=5
                ) as client:
                    answer = client.get(f"/features/{feature}").json()
            except httpx.HTTPError:
                answer = None
        if answer is not None:
            allowed, reason = bool(answer["allowed"]), str(answer["reason"])
            source = "running agent"
        else:
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
        typer.echo(f"{feature}: {verdict} — {reason} [{source}]")
        raise typer.Exit(0 if allowed else 1)

    return app


app = make_app()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
