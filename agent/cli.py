"""``entitle-agent``: the agent's own command (``run``, ``check``), for a gateway.

argparse, not typer: on a gateway every megabyte of the agent's resident memory
counts (``bench/bench_agent_rss.py``). The development tool mounts the same
:func:`main` as ``entitle agent`` (one implementation); there it also gets the
in-process firmware emulators (``--firmware-kind`` without ``--serial-port``),
which are a development aid and not part of the agent's install. Heavy imports
happen inside each command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.firmware import Emulator, FirmwareClient
    from agent.settings import AgentSettings
    from common.config import BrokerAddress

__all__ = ["EmulatorFactory", "main", "parser"]

KINDS = ("gateway", "camera", "counter")
HELP = "The on-device agent: verify, store and enforce entitlements; report health."

EmulatorFactory = Callable[[str, Path], "Emulator"]
"""``(kind, recordings_dir)`` -> a firmware emulator of that kind, run in the agent's process."""


class Exit(Exception):  # noqa: N818 - it is an exit, not an error
    """Leave the command with ``code`` (what it printed is said already)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(*lines: str, code: int = 2) -> Exit:
    """Print ``error: <line>`` for each line on stderr; the Exit to raise."""
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return Exit(code)


def _settings() -> AgentSettings:
    from agent.settings import AgentSettings
    from common.config import ConfigError

    try:
        return AgentSettings.load()
    except ConfigError as exc:
        raise _fail(*exc.problems) from None


_MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, one for the final NUL


def _paths(settings: AgentSettings) -> tuple[str, Path, Path]:
    """The device id, the agent's data folder and its local API socket."""
    if not settings.device_id:
        raise _fail("set ENTITLE_DEVICE_ID to this device's id")
    data_dir = settings.agent_dir()
    socket_path = settings.api_socket or data_dir / "agent.sock"
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
        raise _fail(
            f"the local API socket {socket_path} is {len(os.fsencode(socket_path))} bytes long, "
            f"over the {_MAX_SOCKET_PATH} a Unix socket path may have: set ENTITLE_API_SOCKET "
            "to a shorter path (or ENTITLE_DATA_DIR to a shorter folder)"
        )
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


# a device's first start: the store's and the outbox's tables, made by opening them
_MAKE_TABLES = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from agent.outbox import Outbox
from agent.store import Store
Store(Path(sys.argv[2]) / "agent.db").close()
Outbox(Path(sys.argv[2]) / "outbox.db").close()
"""


def _make_tables(data_dir: Path) -> None:
    """Make a new store's tables in a short-lived child process.

    sqlite-utils makes them (:mod:`agent.store`, :mod:`agent.outbox`) and loads ~40
    modules (click, pluggy, dateutil, tabulate, ...) that the long-running agent would
    keep for nothing: +4 MB idle RSS (``bench/bench_agent_rss.py``). A later start
    finds the tables and never loads it. If the child fails, the agent makes the
    tables itself, and says what went wrong as it always did.
    """
    if (data_dir / "agent.db").exists() and (data_dir / "outbox.db").exists():
        return
    import subprocess

    # isolated (-I: not the working folder, no PYTHON* variables), importing this
    # same agent, wherever it was imported from
    home = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-I", "-c", _MAKE_TABLES, home, str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode:
        logging.getLogger(__name__).debug("tables not made by the child (%s)", done.returncode)


def _positive(text: str) -> float:
    value = float(text)
    if not value >= 0.001:
        raise argparse.ArgumentTypeError(f"{text} is not at least 0.001")
    return value


def parser(prog: str = "entitle-agent") -> argparse.ArgumentParser:
    """The agent's command line: ``run`` and ``check FEATURE``."""
    top = argparse.ArgumentParser(prog=prog, description=HELP)
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help=HELP, description=HELP)
    run.add_argument("-v", "--verbose", action="store_true", help="Log at INFO level.")
    run.add_argument("--serial-port", help="Firmware serial port, e.g. /dev/ttyUSB0.")
    run.add_argument(
        "--firmware-kind",
        help="Device kind (gateway, camera, counter); without --serial-port it runs that "
        "kind's firmware emulator in-process (demos; 'entitle agent run' only).",
    )
    run.add_argument(
        "--recordings-dir", type=Path, help="Prune recordings here to the entitled retention."
    )
    run.add_argument("--health-interval", type=_positive, help="Seconds between health reports.")
    check = commands.add_parser(
        "check",
        help="Exit 0 if FEATURE is allowed now, 1 if not; print why.",
        description="Exit 0 if FEATURE is allowed now, 1 if not; print why.",
    )
    check.add_argument("feature", metavar="FEATURE")
    return top


def main(
    argv: Sequence[str] | None = None,
    *,
    emulator: EmulatorFactory | None = None,
    prog: str = "entitle-agent",
) -> int:
    """Run the command in ``argv`` (default ``sys.argv[1:]``); the exit code.

    ``emulator`` makes ``--firmware-kind`` alone run one in-process (``entitle agent``).
    """
    args = parser(prog).parse_args(argv)
    try:
        if args.command == "run":
            _run(args, emulator=emulator)
            return 0
        if args.command == "check":
            return _check(args.feature)
        parser(prog).print_help()
        return 0
    except Exit as done:
        return done.code


def _run(args: argparse.Namespace, *, emulator: EmulatorFactory | None) -> None:
    """The on-device agent: verify, store and enforce entitlements; report health."""
    from agent.enforcers import FirmwareEnforcer, RetentionPruner
    from agent.notify import SystemdNotifier
    from agent.runtime import Enforcer, open_agent
    from agent.session import Connection, quiet_closed_sockets
    from agent.store import StoreError

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # the agent's own INFO lines are what a person watching it wants: connected to
    # which broker as which device, and each feature allowed or denied until when
    logging.getLogger("agent").setLevel(logging.INFO)
    settings = _settings()
    device_id, data_dir, socket_path = _paths(settings)
    kind = args.firmware_kind or settings.firmware_kind
    if kind is not None and kind not in KINDS:
        raise _fail(f"--firmware-kind {kind!r}: use gateway, camera or counter")
    recordings = args.recordings_dir or settings.recordings_dir
    firmware = _firmware(
        port=args.serial_port or settings.serial_port,
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
    _make_tables(data_dir)
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
            health_interval_s=args.health_interval or settings.health_interval_s,
            notifier=SystemdNotifier.from_environment(),
        )
    except StoreError as exc:
        raise _fail(str(exc)) from exc

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        # systemd stops a service with SIGTERM: stop as on Ctrl-C (STOPPING=1 sent, the
        # local API's socket removed) rather than die where the signal lands
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
        with quiet_closed_sockets(loop):
            await agent.run()

    try:
        asyncio.run(serve())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        agent.close()
        if agent.notifier is not None:
            agent.notifier.close()


def _check(feature: str) -> int:
    """Exit 0 if FEATURE is allowed now, 1 if not; print why."""
    import time
    from urllib.parse import quote

    from agent.api import query
    from agent.store import Store, StoreError

    settings = _settings()
    device_id, data_dir, socket_path = _paths(settings)
    answer = None
    if socket_path.exists():
        try:
            status, answer = query(socket_path, f"/features/{quote(feature, safe='')}")
        except (OSError, ValueError):  # not listening (a stale socket), or a bad answer
            answer = None
        else:
            answer = answer if status == 200 and isinstance(answer, dict) else None
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
    print(f"{feature}: {verdict} — {reason} [{source}]")
    return 0 if allowed else 1


if __name__ == "__main__":
    sys.exit(main())
