"""Grant → enforced latency on loopback, beside the raw broker round trip of the same run.

Every part runs as it does in production, each in its own process: Mosquitto
with the project's config, one ``entitle cloud serve`` worker (SQLite file or
a scratch PostgreSQL database), and ``--devices`` gateways each running
``entitle agent run`` with its own login, store and root key set. The bench
process holds only an HTTP client and an MQTT observer with the cloud's ACL.

It alternates grant and revoke of ``remote_access`` through the public API and
times each from the start of the HTTP request until every agent has said, on
its retained ``status`` topic, that it holds the new token. An agent publishes
that status after its enforcers applied the new decisions, so the figure is
an upper bound of "enforced" (it includes one more MQTT hop). Beside it: the
HTTP call's own time, and bare MQTT QoS 1 publish → receive through the same
broker, the floor under any figure of ours. The load average is printed too.

    python bench/bench_latency.py --grants 200 --devices 3
    python bench/bench_latency.py --database postgresql
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
from databases import scratch_database
from rich.console import Console
from rich.progress import track

from common.mqtt import SOCKET_OPTIONS
from protocol.topics import PREFIX, device_topic
from simulators.fleet import DevicePlan
from simulators.fleet_run import LocalCloud

YEAR = 366 * 86400
OBSERVER = "bench-observer"
STARTUP_S = 120.0  # a hang guard for the agents' first connection, not a figure


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def _agents(cloud: LocalCloud, root: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One ``entitle agent run`` process per registered device."""
    keyset = root / "root-keyset.cbor"
    keyset.write_bytes(cloud.root_keyset)
    processes = []
    try:
        for login in cloud.logins:
            env = {
                **os.environ,
                "ENTITLE_DATA_DIR": str(root / f"agent-{login.device_id}"),
                "ENTITLE_DEVICE_ID": login.device_id,
                "ENTITLE_BROKER_URL": str(cloud.broker.url_for(login.device_id, login.password)),
                "ENTITLE_ROOT_KEYSET_FILE": str(keyset),
            }
            with (root / f"agent-{login.device_id}.log").open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "entitle.cli", "agent", "run"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


class Statuses:
    """The newest token version each device announced on its status topic, and when each
    version was first announced (the observer's clock, ``time.perf_counter``)."""

    def __init__(self) -> None:
        self.ver: dict[str, int] = {}
        self.first_seen: dict[tuple[str, int], float] = {}
        self._changed = asyncio.Condition()

    async def follow(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                status = json.loads(bytes(message.payload))
            except ValueError:
                continue
            if status.get("status") != "online" or "token_ver" not in status:
                continue
            device, ver = status["device_id"], status["token_ver"] or 0
            self.first_seen.setdefault((device, ver), time.perf_counter())
            async with self._changed:
                self.ver[device] = ver
                self._changed.notify_all()

    async def reach(self, want: dict[str, int], *, within: float) -> float:
        """Until every device in ``want`` announced at least that version; returns the
        moment the last of them first did (it may be before the call)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(
                lambda: all(self.ver.get(d, -1) >= v for d, v in want.items())
            )
        return max(
            min(t for (dev, ver), t in self.first_seen.items() if dev == d and ver >= v)
            for d, v in want.items()
        )


async def _raw_round_trips(client: aiomqtt.Client, n: int) -> list[float]:
    topic = device_topic("bench-raw", "health")
    out = []
    async with client:
        await client.subscribe(topic, qos=1)
        for i in range(n):
            start = time.perf_counter()
            await client.publish(topic, str(i).encode(), qos=1)
            async for _ in client.messages:
                break
            out.append(time.perf_counter() - start)
    return out


def _observer(cloud: LocalCloud, password: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        cloud.host,
        cloud.port,
        username=OBSERVER,
        password=password,
        identifier=f"{OBSERVER}-{secrets.token_hex(3)}",
        socket_options=SOCKET_OPTIONS,
    )


async def _measure(
    console: Console, *, grants: int, devices: int, database_url: str | None, root: Path
) -> tuple[list[float], list[float], list[float]]:
    plans = [DevicePlan(f"lat-{i + 1:02d}", "gateway") for i in range(devices)]
    password = secrets.token_urlsafe(12)
    extra = {OBSERVER: password}
    with (
        LocalCloud(root, plans, database_url=database_url, extra_clouds=extra) as cloud,
        _agents(cloud, root),
    ):
        raw = await _raw_round_trips(_observer(cloud, password), grants)
        statuses = Statuses()
        async with _observer(cloud, password) as observer, cloud.async_api() as api:
            await observer.subscribe(f"{PREFIX}/dev/+/status", qos=1)
            follower = asyncio.create_task(statuses.follow(observer))
            try:
                await statuses.reach({p.device_id: 0 for p in plans}, within=STARTUP_S)
                installation = f"inst-{plans[0].device_id}"
                samples, http = [], []
                for i in track(range(grants), description="grant/revoke", console=console):
                    start = time.perf_counter()
                    if i % 2 == 0:
                        response = await api.post(
                            f"/api/v1/installations/{installation}/grants",
                            json={"feature": "remote_access", "until": int(time.time()) + YEAR},
                        )
                    else:
                        response = await api.delete(
                            f"/api/v1/installations/{installation}/grants/remote_access"
                        )
                    response.raise_for_status()
                    http.append(time.perf_counter() - start)
                    want = {t["device_id"]: t["ver"] for t in response.json()["tokens"]}
                    # enforcement may come before the HTTP answer: timed from the status
                    samples.append(await statuses.reach(want, within=10) - start)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await follower
    return samples, http, raw


async def main(grants: int, devices: int, database: str) -> None:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="entitle-bench-latency-"))
    try:
        with scratch_database(database) as url:
            samples, http, raw = await _measure(
                console,
                grants=grants,
                devices=devices,
                database_url=url,
                root=root,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ms = [s * 1000 for s in samples]
    raw_ms = [s * 1000 for s in raw]
    http_ms = [s * 1000 for s in http]
    console.print(
        f"devices: {devices} (one agent process each); changes: {grants}; "
        f"database: {database}; one cloud worker process"
    )
    console.print(
        f"grant→enforced on all devices (their status says so): p50 {_pct(ms, 0.5):.1f} ms, "
        f"p99 {_pct(ms, 0.99):.1f} ms, mean {statistics.mean(ms):.1f} ms (goal p99 < 20)"
    )
    console.print(
        f"the HTTP grant/revoke answered (after the published mark): p50 "
        f"{_pct(http_ms, 0.5):.1f} ms, p99 {_pct(http_ms, 0.99):.1f} ms"
    )
    console.print(
        f"raw MQTT QoS1 publish→receive (same broker, same run): "
        f"p50 {_pct(raw_ms, 0.5):.2f} ms, p99 {_pct(raw_ms, 0.99):.2f} ms"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(f"load average at the end: {load} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.grants, args.devices, args.database))
