"""The agent tells systemd how it is doing (agent.notify), on a real Unix datagram socket.

The test binds the socket systemd would (``NOTIFY_SOCKET``) and reads what the agent
sends: READY=1 once it enforces and its local API listens, WATCHDOG=1 while
``WATCHDOG_USEC`` asks for it, STOPPING=1 when it stops (cancelled in-process, or
SIGTERM to ``entitle-agent run`` as its own process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.api import query
from agent.notify import SystemdNotifier
from agent.runtime import open_agent
from common.tasks import cancel_and_wait
from simulators import TokenRepositorySimulator
from tests.waiting import HANG_S


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """The notification socket systemd listens on, bound in ``tmp_path``."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield sock, path


async def _receive(sock: socket.socket) -> list[str]:
    """The next datagram's lines (awaited; the ceiling only catches a hang)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    async with asyncio.timeout(HANG_S):
        data = await loop.sock_recv(sock, 4096)
    return data.decode().split("\n")


def test_outside_systemd_there_is_no_notifier() -> None:
    assert SystemdNotifier.from_environment({}) is None
    assert SystemdNotifier.from_environment({"NOTIFY_SOCKET": "relative/path"}) is None


def test_the_watchdog_is_on_only_for_the_process_it_names() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "20000000"}
    assert SystemdNotifier.from_environment(env, pid=7).watchdog_s == 20.0  # type: ignore[union-attr]
    mine = {**env, "WATCHDOG_PID": "7"}
    assert SystemdNotifier.from_environment(mine, pid=7).watchdog_s == 20.0  # type: ignore[union-attr]
    other = {**env, "WATCHDOG_PID": "8"}
    assert SystemdNotifier.from_environment(other, pid=7).watchdog_s is None  # type: ignore[union-attr]
    off = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"}
    assert SystemdNotifier.from_environment(off).watchdog_s is None  # type: ignore[union-attr]


def test_an_abstract_socket_is_reached_by_its_at_sign_name() -> None:
    name = f"entitle-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier is not None
        assert notifier.notify("STATUS=hello")
        notifier.close()
        assert sock.recv(4096) == b"STATUS=hello"


def test_a_send_to_a_socket_nobody_binds_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "nobody.sock"))
    assert notifier.ready("up") is False and notifier.sent == 0
    notifier.close()


async def test_ready_once_the_api_listens_then_watchdog_then_stopping(
    tmp_path: Path, systemd: tuple[socket.socket, Path]
) -> None:
    sock, path = systemd
    repo = TokenRepositorySimulator()
    api = tmp_path / "api.sock"
    notifier = SystemdNotifier(str(path), watchdog_s=0.02)
    agent = open_agent(
        device_id="dev-n",
        data_dir=tmp_path / "agent",
        connection=None,
        root_keyset=repo.root_keyset,
        api_socket=api,
        notifier=notifier,
    )
    task = asyncio.create_task(agent.run())
    try:
        ready = await _receive(sock)
        assert ready[0] == "READY=1" and ready[1].startswith("STATUS=enforcing token ver 0")
        # READY means the local API answers now: no retry needed
        status, body = await asyncio.to_thread(query, api, "/status")
        assert status == 200 and body["device_id"] == "dev-n"
        assert await _receive(sock) == ["WATCHDOG=1"]
        assert await _receive(sock) == ["WATCHDOG=1"]
    finally:
        await cancel_and_wait([task])
        agent.close()
        notifier.close()
    while (lines := await _receive(sock)) == ["WATCHDOG=1"]:
        pass
    assert lines == ["STOPPING=1"]
    assert not api.exists()


async def test_entitle_agent_run_under_systemd_stops_cleanly_on_sigterm(
    tmp_path: Path, systemd: tuple[socket.socket, Path]
) -> None:
    sock, path = systemd
    repo = TokenRepositorySimulator()
    keyset = tmp_path / "root-keyset.cbor"
    keyset.write_bytes(repo.root_keyset)
    with socket.socket() as probe:  # a port nobody listens on: the agent keeps retrying
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("ENTITLE_")},
        "NOTIFY_SOCKET": str(path),
        "WATCHDOG_USEC": "100000",
        "ENTITLE_DEVICE_ID": "gw-sd",
        "ENTITLE_DATA_DIR": str(tmp_path / "data"),
        "ENTITLE_ROOT_KEYSET_FILE": str(keyset),
        "ENTITLE_BROKER_URL": f"mqtt://gw-sd:secret@127.0.0.1:{port}",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once; its messages are awaited
        [sys.executable, "-m", "agent.cli", "run"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = await _receive(sock)
        assert ready[0] == "READY=1"
        assert await _receive(sock) == ["WATCHDOG=1"]
        proc.send_signal(signal.SIGTERM)
        while (lines := await _receive(sock)) == ["WATCHDOG=1"]:
            pass
        assert lines == ["STOPPING=1"]
        assert await asyncio.to_thread(proc.wait, HANG_S) == 0  # a clean stop, not a kill
        assert not (tmp_path / "data" / "agent-gw-sd" / "agent.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
