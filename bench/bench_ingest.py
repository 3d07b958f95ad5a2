"""Health ingestion end to end (publish → row committed) beside raw Mosquitto, same run.

For each database (SQLite file, PostgreSQL scratch database) and each number
of cloud workers (1, 2; ``entitle cloud serve`` processes sharing
``$share/cloud/...``) it starts Mosquitto with the project's own config on a
free port (:class:`simulators.fleet_run.LocalCloud`), then:

* raw: ``--publishers`` MQTT clients publish ``--messages`` QoS 1 messages of
  the health report's size to a plain subscriber (announcing the same Receive
  Maximum as the cloud) on the same broker; timed from the first publish to
  the last message received;
* ours: the same clients, logged in as registered devices, publish the same
  number of valid health reports on their own ``health`` topics; timed from
  the first publish until the cloud's database holds every row.

    python bench/bench_ingest.py --messages 20000 --publishers 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from rich.console import Console
from rich.table import Table

from protocol.health import health_from_dict, health_to_json
from protocol.topics import device_topic
from simulators.fleet import DevicePlan
from simulators.fleet_run import LocalCloud, stored_reports

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
RECEIVE_MAXIMUM = 1000  # what the cloud's bridge announces (cloud/bridge.py)
WINDOW = 50  # QoS 1 publishes in flight per publisher


def _report(device_id: str, seq: int) -> bytes:
    report = {
        "v": 1,
        "device_id": device_id,
        "seq": seq,
        "ts": int(time.time()),
        "kind": "gateway",
        "fw": "2.4.1",
        "uptime_s": 86_400 + seq,
        "reboots": {"count": 1, "last_reason": "power_on"},
        "cpu_temp_c": 47.5,
        "mem_used_pct": 41.0,
        "disk": {"used_pct": 33.0, "write_errors": 0, "reallocated": 0},
        "net": {"rssi_dbm": -61, "loss_pct": 0.0},
        "serial": {"crc_errors": 0, "timeouts": 0},
        "kind_specific": {"load_avg": 0.4, "zigbee_nodes": 23},
        "dropped": 0,
        "errors": {"serial": {}, "cmd": {}, "rejected_tokens": {}},
    }
    return health_to_json(health_from_dict(report))


@contextlib.contextmanager
def _scratch_postgres() -> Iterator[str]:
    name = f"entitle_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _client(cloud: LocalCloud, user: str, password: str, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        cloud.host,
        cloud.port,
        username=user,
        password=password,
        identifier=user,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )


async def _publish(
    cloud: LocalCloud,
    logins: Sequence[tuple[str, str]],
    messages: Sequence[list[tuple[str, bytes]]],
) -> None:
    """Each login publishes its messages, QoS 1, ``WINDOW`` awaiting PUBACK at once."""

    async def one(user: str, password: str, items: list[tuple[str, bytes]]) -> None:
        async with _client(cloud, user, password, max_inflight_messages=WINDOW) as client:
            limit = asyncio.Semaphore(WINDOW)

            async def send(topic: str, payload: bytes) -> None:
                async with limit:
                    await client.publish(topic, payload, qos=1)

            async with asyncio.TaskGroup() as tasks:
                for topic, payload in items:
                    await limit.acquire()  # backpressure before creating the task
                    limit.release()
                    tasks.create_task(send(topic, payload))

    async with asyncio.TaskGroup() as tasks:
        for (user, password), items in zip(logins, messages, strict=True):
            tasks.create_task(one(user, password, items))


async def _raw(cloud: LocalCloud, clouds: dict[str, str], total: int, size: int) -> float:
    """Raw Mosquitto msgs/s: publishers → one plain QoS 1 subscriber."""
    publishers = [(u, p) for u, p in clouds.items() if u.startswith("bench-pub")]
    per = total // len(publishers)
    payload = b"x" * size
    messages = [
        [(f"entitle/v1/bench/{i}", payload) for _ in range(per)] for i in range(len(publishers))
    ]
    expected = per * len(publishers)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    async with _client(cloud, "bench-sub", clouds["bench-sub"], properties=props) as sub:
        await sub.subscribe("entitle/v1/bench/+", qos=1)
        start = time.perf_counter()

        async def receive() -> None:
            received = 0
            async for _ in sub.messages:
                received += 1
                if received >= expected:
                    return

        async with asyncio.timeout(600), asyncio.TaskGroup() as tasks:
            tasks.create_task(_publish(cloud, publishers, messages))
            tasks.create_task(receive())
        elapsed = time.perf_counter() - start
    return expected / elapsed


async def _stored_at_least(cloud: LocalCloud, count: int) -> None:
    async with asyncio.timeout(120):
        while await asyncio.to_thread(stored_reports, cloud.database_url) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def _ours(
    cloud: LocalCloud, total: int, on_progress: Callable[[int], None]
) -> tuple[float, float]:
    """(stored msgs/s end to end, publish msgs/s) for ``total`` reports from the devices."""
    logins = [(login.device_id, login.password) for login in cloud.logins]
    # warm-up: one report each, so every worker is subscribed and every device known
    await _publish(cloud, logins, [[(device_topic(u, "health"), _report(u, 1))] for u, _ in logins])
    await _stored_at_least(cloud, len(logins))
    base = len(logins)
    per = total // len(logins)
    messages = [
        [(device_topic(u, "health"), _report(u, seq)) for seq in range(2, per + 2)]
        for u, _ in logins
    ]
    expected = per * len(logins)
    start = time.perf_counter()
    await _publish(cloud, logins, messages)
    published = time.perf_counter() - start
    deadline = time.monotonic() + 600
    stored = 0
    while stored < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stored = await asyncio.to_thread(stored_reports, cloud.database_url) - base
        on_progress(stored)
    if stored < expected:
        raise RuntimeError(f"only {stored} of {expected} reports stored in 600 s")
    return expected / (time.perf_counter() - start), expected / published


async def _measure(
    database: str, url: str | None, workers: int, args: argparse.Namespace, console: Console
) -> tuple[float, float, float]:
    root = Path(tempfile.mkdtemp(prefix="entitle-bench-ingest-"))
    clouds = {f"bench-pub-{i}": secrets.token_urlsafe(12) for i in range(args.publishers)}
    clouds["bench-sub"] = secrets.token_urlsafe(12)
    plans = [DevicePlan(f"bench-{i:04d}", "gateway") for i in range(args.publishers)]
    size = len(_report(plans[0].device_id, 10_000))
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, root, True)
    with (
        cleanup,
        LocalCloud(root, plans, workers=workers, database_url=url, extra_clouds=clouds) as cloud,
    ):
        console.print(f"[{database}, {workers} worker(s)] broker on port {cloud.port}; raw ...")
        raw = await _raw(cloud, clouds, args.messages, size)
        console.print(f"[{database}, {workers} worker(s)] ours ...")
        ours, published = await _ours(cloud, args.messages, lambda n: None)
    return raw, ours, published


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt warns of any window > 10
    console = Console()
    size = len(_report("bench-0000", 10_000))
    rows = []
    for database in args.databases:
        for workers in args.workers:
            if database == "postgresql":
                with _scratch_postgres() as url:
                    figures = await _measure(database, url, workers, args, console)
            else:
                figures = await _measure(database, None, workers, args, console)
            rows.append((database, workers, *figures))
    table = Table(
        title=f"health ingest, {args.messages:,} QoS 1 messages of {size} bytes, "
        f"{args.publishers} publishers (same broker, same run)",
        title_justify="left",
    )
    for column in (
        "database",
        "cloud workers",
        "raw Mosquitto msg/s",
        "ours: stored msg/s",
        "ours / raw",
        "publish msg/s (ours)",
    ):
        table.add_column(column, justify="right")
    for database, workers, raw, ours, published in rows:
        table.add_row(
            database,
            str(workers),
            f"{raw:,.0f}",
            f"{ours:,.0f}",
            f"{ours / raw:.0%}",
            f"{published:,.0f}",
        )
    console.print(table)
    console.print("goal: ours / raw >= 50%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--publishers", type=int, default=20)
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    asyncio.run(main(parser.parse_args()))
