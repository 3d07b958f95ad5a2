"""Running a fleet: a local broker + cloud when asked, worker processes, live figures.

:class:`LocalCloud` starts what ``entitle sim fleet --local`` and the
benchmarks run against: Mosquitto with the project's own config (every
device login written once, at start) and ``workers`` cloud processes
(``entitle cloud serve``, each its own MQTT login sharing
``$share/cloud/...``) on one database. :func:`run_fleet` splits the devices
over worker processes (:mod:`simulators.fleet_worker`) and hands the summed
figures to a callback every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue as queues
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulators.fleet import DeviceLogin, DevicePlan, register_in_store
from simulators.fleet_worker import ShardJob, ShardStats, run_shard, shards_of, worker_main

__all__ = ["DEVICES_PER_PROCESS", "FleetStats", "LocalCloud", "run_fleet", "stored_reports"]

_PORT_ATTEMPTS = 3


class _PortTaken(RuntimeError):
    """The cloud process found its free port taken by the time it bound it."""


DEVICES_PER_PROCESS = 2500  # ~7 descriptors a device under the 20,000 hard cap, with margin


@dataclass
class FleetStats:
    """The fleet's figures summed over shards."""

    devices: int = 0
    started: int = 0
    connected: int = 0
    collected: int = 0
    acked: int = 0
    publish_failures: int = 0
    queued: int = 0
    rss_bytes: int = 0
    shards: dict[int, ShardStats] = field(default_factory=dict)

    def update(self, stats: ShardStats) -> None:
        self.shards[stats.shard] = stats
        for name in ("started", "connected", "collected", "acked", "publish_failures"):
            setattr(self, name, sum(getattr(s, name) for s in self.shards.values()))
        self.queued = sum(s.queued for s in self.shards.values())
        self.rss_bytes = sum(s.rss_bytes for s in self.shards.values())


def stored_reports(database_url: str) -> int:
    """Health reports committed in the cloud's database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM health_reports")).scalar_one())
    finally:
        engine.dispose()


class LocalCloud:
    """Mosquitto + ``workers`` cloud processes in ``root``, devices registered in the DB."""

    def __init__(
        self,
        root: Path,
        plans: Sequence[DevicePlan],
        *,
        workers: int = 1,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        extra_clouds: dict[str, str] | None = None,
        persistence: bool = False,
        engine: str = "mosquitto",
        nodes: int = 3,
    ) -> None:
        """``extra_clouds``: more logins with the cloud's ACL (login → password),
        for benchmark clients beside the cloud workers; ``persistence``: Mosquitto
        keeps retained messages and sessions across a restart (the reconnect storm);
        ``engine="nats"``: a NATS cluster of ``nodes`` nodes instead (MQTT 3.1.1, device
        logins written to the cluster's logins bucket at start, ``fallbacks`` the other
        nodes)."""
        if engine not in ("mosquitto", "nats"):
            raise ValueError(f"engine must be mosquitto or nats, not {engine!r}")
        self.root = root
        self.plans = plans
        self.workers = workers
        self.cloud_dir = root / "cloud"
        self.database_url = database_url or f"sqlite:///{self.cloud_dir / 'cloud.db'}"
        self.env = env or {}
        self.extra_clouds = extra_clouds or {}
        self.persistence = persistence
        self.engine = engine
        self.nodes = nodes
        self.protocol = 4 if engine == "nats" else 5
        self.fallbacks: tuple[tuple[str, int], ...] = ()
        self.logins: list[DeviceLogin] = []
        self.api_url = ""
        self.api_key = ""
        self.root_keyset = b""
        self.host = "127.0.0.1"
        self.port = 0
        self.broker: Any = None
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocalCloud:
        from broker.mosquitto import MosquittoBroker, find_free_port
        from cloud.accounts.apikeys import bootstrap_api_key

        self.cloud_dir.mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        self.logins = register_in_store(self.database_url, self.plans, now=now)
        clouds = {f"cloud-{i + 1}": secrets.token_urlsafe(18) for i in range(self.workers)}
        accounts = {
            **clouds,
            **self.extra_clouds,
            **{login.device_id: login.password for login in self.logins},
        }
        if self.engine == "nats":
            from broker.nats import NatsCluster

            cluster = NatsCluster(
                self.cloud_dir / "broker",
                accounts={**clouds, **self.extra_clouds},
                nodes=self.nodes,
            )
            self.broker = cluster.start()
            for login in self.logins:  # no reload: the responders read the logins bucket
                cluster.accounts_adapter.set_password(login.device_id, login.password)
            self.port = cluster.nodes[0].mqtt
            self.fallbacks = cluster.fallbacks
        else:
            self.broker = MosquittoBroker(
                self.cloud_dir / "broker",
                accounts=accounts,
                cloud_username=[*clouds, *self.extra_clouds],
                persistence=self.persistence,
            ).start()
            self.port = self.broker.port
        self.api_key = bootstrap_api_key(self.database_url, name="fleet simulator", now=now)
        for user, password in clouds.items():
            env = {
                **os.environ,
                **self.env,
                **self._broker_env(user, password),
                "ENTITLE_DATA_DIR": str(self.cloud_dir),
                "ENTITLE_DATABASE_URL": self.database_url,
            }
            for attempt in range(_PORT_ATTEMPTS):
                # a free port is free only until someone else binds it: on "address already
                # in use" (another test process took it meanwhile) start again on a new one
                http_port = find_free_port()
                env["ENTITLE_HTTP_PORT"] = str(http_port)
                with (self.root / f"{user}.log").open("ab") as log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "entitle.cli", "cloud", "serve"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                self._processes.append(process)
                url = f"http://127.0.0.1:{http_port}"
                try:
                    self._wait_ready(url, process, user)
                    break
                except _PortTaken:
                    self._processes.remove(process)
                    if attempt == _PORT_ATTEMPTS - 1:
                        raise
            self.api_url = self.api_url or url
        with self.api() as api:
            import base64

            reply = api.get("/api/v1/keyset")
            reply.raise_for_status()
            self.root_keyset = base64.b64decode(reply.json()["keyset_b64"])
        return self

    def _broker_env(self, user: str, password: str) -> dict[str, str]:
        if self.engine == "nats":  # every node's URL, for failover
            return dict(self.broker.cloud_env(user, password))
        return {"ENTITLE_BROKER_URL": str(self.broker.url_for(user, password))}

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=120
        )

    def async_api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=120
        )

    def _wait_ready(self, url: str, process: subprocess.Popen[bytes], user: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (self.root / f"{user}.log").read_text(errors="replace")[-2000:]
                if "address already in use" in log:
                    raise _PortTaken(f"cloud worker {user}: its port was taken: {log}")
                raise RuntimeError(f"cloud worker {user} exited: {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"cloud worker {user} did not become ready in 60 s")

    def cloud_pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> LocalCloud:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def run_fleet(
    logins: Sequence[DeviceLogin],
    *,
    host: str,
    port: int,
    root_keyset: bytes,
    data_dir: Path,
    interval_s: float,
    duration_s: float | None,
    processes: int,
    ramp_s: float | None = None,
    on_update: Callable[[FleetStats], None] = lambda stats: None,
    should_stop: Callable[[FleetStats], bool] = lambda stats: False,
    protocol: int = 5,
) -> FleetStats:
    """Run the fleet for ``duration_s`` after the ramp-up (None: until cancelled); the
    final figures.

    The ramp-up is over when every device has started, however long that took: on a
    busy machine spawning the workers alone can outlast the planned ramp, and a
    window timed from the call stopped fleets before their devices existed.
    ``processes`` 0 runs every agent in this event loop (tests); otherwise the
    devices are dealt over that many spawned worker processes.
    """
    total = FleetStats(devices=len(logins))
    ramp = min(interval_s, len(logins) / 200) if ramp_s is None else ramp_s
    jobs = [
        ShardJob(
            shard=i,
            logins=list(shard),
            host=host,
            port=port,
            root_keyset=root_keyset,
            data_dir=data_dir,
            interval_s=interval_s,
            ramp_s=ramp,
            protocol=protocol,
        )
        for i, shard in enumerate(shards_of(logins, processes))
    ]
    ramped_at: float | None = None

    def over() -> bool:
        nonlocal ramped_at
        if should_stop(total):
            return True
        if duration_s is None or total.started < total.devices:
            return False
        if ramped_at is None:
            ramped_at = time.monotonic()
        return time.monotonic() - ramped_at >= duration_s

    if processes == 0:
        flag = asyncio.Event()

        async def watch() -> None:
            while not over():
                on_update(total)
                await asyncio.sleep(1)
            flag.set()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(watch(), name="fleet-watch")
            tasks.create_task(
                run_shard(jobs[0], stop=flag.is_set, report=total.update), name="fleet-shard"
            )
        on_update(total)
        return total
    context = multiprocessing.get_context("spawn")
    stats_queue: Any = context.Queue()
    stop = context.Event()
    workers = [
        context.Process(
            target=worker_main, args=(job, stats_queue, stop), name=f"shard-{job.shard}"
        )
        for job in jobs
    ]
    for worker in workers:
        worker.start()
    try:
        done: set[int] = set()
        while len(done) < len(workers):
            try:
                stats = await asyncio.to_thread(stats_queue.get, True, 1.0)
            except queues.Empty:
                if not any(w.is_alive() for w in workers):
                    break
                stats = None
            if stats is not None:
                total.update(stats)
                if stats.done:
                    done.add(stats.shard)
            on_update(total)
            if over() and not stop.is_set():
                stop.set()
    finally:
        stop.set()
        for worker in workers:
            await asyncio.to_thread(worker.join, 30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    return total
