"""Health ingestion end to end (C publishers → rows committed) beside a C subscriber, same run.

For each database (SQLite file, PostgreSQL scratch database) and each number of
cloud workers (``entitle cloud serve`` processes, each its own login and
persistent session in ``$share/cloud/...``) it starts Mosquitto with the
project's own config on a free port (:class:`simulators.fleet_run.LocalCloud`),
then:

* raw: ``--publishers`` ``mosquitto_pub -l`` processes (C) publish
  ``--messages`` QoS 1 messages of the health report's size, read as lines from
  stdin, to one ``mosquitto_sub`` (C, QoS 1) on the same broker; timed from the
  first publisher's start until the subscriber has them all: what the broker
  and a C client do on this machine now;
* ours: the same C publishers, logged in as registered devices, publish the
  same number of valid health reports on their own ``health`` topics; timed
  until the database holds every row. Each worker's ``/metrics`` gives the CPU
  it spent per report and stage (receive, parse, store).

No Python publishes: the load must not compete with the workers for the GIL
of a client library. The machine may be shared; each table row states the
load average of its run.

    python bench/bench_ingest.py --messages 50000 --publishers 8 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from databases import scratch_database
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from protocol.topics import device_topic
from simulators.fleet import DevicePlan
from simulators.fleet_run import LocalCloud, stored_reports

INFLIGHT = 100  # QoS 1 publishes in flight per C publisher (mosquitto_pub -M)


def _report(device_id: str, seq: int, ts: int) -> str:
    return json.dumps(
        {
            "v": 1,
            "device_id": device_id,
            "seq": seq,
            "ts": ts,
            "kind": "gateway",
            "fw": "2.4.1",
            "uptime_s": 86_400 + seq,
            "reboots": {"count": 1, "last_reason": "power_on"},
            "cpu_temp_c": 47.5,
            "mem_used_pct": 41.0,
            "disk": {"used_pct": 33.0, "write_errors": 0, "reallocated": 0},
            "net": {"rssi_dbm": -61.0, "loss_pct": 0.0},
            "serial": {"crc_errors": 0, "timeouts": 0},
            "kind_specific": {"load_avg": 0.4, "zigbee_nodes": 23},
            "dropped": 0,
            "errors": {"serial": {}, "cmd": {}, "rejected_tokens": {}},
        },
        separators=(",", ":"),
    )


def _version(cloud: LocalCloud) -> str:
    """The C clients' ``-V``: the protocol the cloud speaks on this engine (3.1.1 on NATS)."""
    return "mqttv5" if cloud.protocol == 5 else "mqttv311"


def _c_publishers(
    cloud: Any, jobs: Sequence[tuple[str, str, str, str]]
) -> list[subprocess.Popen[bytes]]:
    """One ``mosquitto_pub -l`` per (login, password, topic, lines); started, stdin fed."""
    started = []
    for user, password, topic, lines in jobs:
        process = subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                cloud.host,
                "-p",
                str(cloud.port),
                "-u",
                user,
                "-P",
                password,
                "-i",
                user,
                "-t",
                topic,
                "-q",
                "1",
                "-V",
                _version(cloud),
                "-M",
                str(INFLIGHT),
                "-l",
            ],  # fmt: skip
            stdin=subprocess.PIPE,
        )
        started.append((process, lines))
    for process, lines in started:  # feed after all started: they publish side by side
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(lines.encode())
            process.stdin.close()
    return [process for process, _ in started]


def _wait_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.wait(600) != 0:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}")


def _raw(cloud: Any, clouds: dict[str, str], total: int, size: int) -> float:
    """C publishers → one C QoS 1 subscriber: msg/s received."""
    publishers = [u for u in clouds if u.startswith("bench-pub")]
    per = total // len(publishers)
    line = "x" * (size - 1)
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            cloud.host,
            "-p",
            str(cloud.port),
            "-u",
            "bench-sub",
            "-P",
            clouds["bench-sub"],
            "-i",
            "bench-sub",
            "-t",
            "entitle/v1/bench/+",
            "-q",
            "1",
            "-V",
            _version(cloud),
            "-C",
            str(per * len(publishers)),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # subscribed before the first publish (no -E with -C on 2.0.11)
    start = time.perf_counter()
    jobs = [
        (u, clouds[u], f"entitle/v1/bench/{i}", (line + "\n") * per)
        for i, u in enumerate(publishers)
    ]
    _wait_all(_c_publishers(cloud, jobs))
    _wait_all([subscriber])
    return per * len(publishers) / (time.perf_counter() - start)


def _worker_ports(cloud: Any) -> list[int]:
    ports = []
    for pid in cloud.cloud_pids():
        with contextlib.suppress(psutil.Error, KeyError):
            ports.append(int(psutil.Process(pid).environ()["ENTITLE_HTTP_PORT"]))
    return ports


def _process_cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) the worker processes have used so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _cpu(ports: Sequence[int]) -> dict[str, float]:
    """CPU seconds per ingest stage, summed over the workers' /metrics."""
    total = {"receive": 0.0, "parse": 0.0, "store": 0.0}
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "entitle_health_ingest_cpu_seconds_total":
                    total[sample.labels["stage"]] += sample.value
    return total


async def _stored_at_least(url: str, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await asyncio.to_thread(stored_reports, url) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} reports stored in {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def _ours(cloud: Any, total: int) -> tuple[float, dict[str, float]]:
    """(stored reports/s, CPU µs per report and stage) for ``total`` reports."""
    logins = [(login.device_id, login.password) for login in cloud.logins]
    ts = int(time.time())
    warm = [(u, p, device_topic(u, "health"), _report(u, 1, ts) + "\n") for u, p in logins]
    await asyncio.to_thread(_wait_all, _c_publishers(cloud, warm))
    await _stored_at_least(cloud.database_url, len(logins), 60)  # every worker subscribed
    ports = _worker_ports(cloud)
    before = _cpu(ports)
    before["process"] = _process_cpu(cloud.cloud_pids())
    per = total // len(logins)
    jobs = [
        (
            u,
            p,
            device_topic(u, "health"),
            "".join(_report(u, s, ts) + "\n" for s in range(2, per + 2)),
        )
        for u, p in logins
    ]
    expected = per * len(logins)
    start = time.perf_counter()
    publishers = _c_publishers(cloud, jobs)
    await _stored_at_least(cloud.database_url, expected + len(logins), 900)
    elapsed = time.perf_counter() - start
    await asyncio.to_thread(_wait_all, publishers)
    after = _cpu(ports)
    after["process"] = _process_cpu(cloud.cloud_pids())
    cpu = {stage: (after[stage] - before[stage]) / expected * 1e6 for stage in after}
    return expected / elapsed, cpu


async def _measure(
    engine: str,
    database: str,
    url: str | None,
    workers: int,
    args: argparse.Namespace,
    console: Console,
) -> tuple[float, float, dict[str, float], float]:
    root = Path(tempfile.mkdtemp(prefix="entitle-bench-ingest-"))
    clouds = {f"bench-pub-{i}": secrets.token_urlsafe(12) for i in range(args.publishers)}
    clouds["bench-sub"] = secrets.token_urlsafe(12)
    plans = [DevicePlan(f"bench-{i:04d}", "gateway") for i in range(args.publishers)]
    size = len(_report(plans[0].device_id, 10_000, int(time.time()))) + 1
    cleanup = contextlib.ExitStack()
    cleanup.callback(shutil.rmtree, root, True)
    env = {"ENTITLE_HEALTH_BATCH_SIZE": str(args.batch)}
    running = LocalCloud(
        root,
        plans,
        workers=workers,
        database_url=url,
        extra_clouds=clouds,
        env=env,
        engine=engine,
        nodes=args.nats_nodes,
    )
    with cleanup, running as cloud:
        console.print(f"{engine}, {database}, {workers} worker(s): port {cloud.port}; raw ...")
        raw = await asyncio.to_thread(_raw, cloud, clouds, args.messages, size)
        console.print(f"{engine}, {database}, {workers} worker(s): ours ...")
        ours, cpu = await _ours(cloud, args.messages)
    return raw, ours, cpu, os.getloadavg()[0]


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    console = Console(width=170)
    rows = []
    for engine in args.engines:
        for database in args.databases:
            for workers in args.workers:
                try:
                    with scratch_database(database) as url:
                        figures = await _measure(
                            engine,
                            database,
                            url if database == "postgresql" else None,
                            workers,
                            args,
                            console,
                        )
                except RuntimeError as exc:  # one configuration failed: say so, go on
                    console.print(f"{engine}, {database}, {workers} worker(s) FAILED: {exc}")
                    continue
                console.print(f"{engine}, {database}, {workers} worker(s): {figures}")
                rows.append((engine, database, workers, *figures))
    table = Table(
        title=f"health ingest, {args.messages:,} QoS 1 reports from {args.publishers} C "
        f"publishers (mosquitto_pub -l), batches of {args.batch}; same broker, same run",
        title_justify="left",
    )
    for column in (
        "broker",
        "database",
        "workers",
        "raw: C pub → C sub msg/s",
        "ours: stored/s",
        "ours / raw",
        "CPU µs/report: receive",
        "parse",
        "store",
        "whole worker",
        "load avg",
    ):
        table.add_column(column, justify="right")
    for engine, database, workers, raw, ours, cpu, load in rows:
        table.add_row(
            engine if engine == "mosquitto" else f"nats x{args.nats_nodes}",
            database,
            str(workers),
            f"{raw:,.0f}",
            f"{ours:,.0f}",
            f"{ours / raw:.0%}",
            f"{cpu['receive']:.0f}" if engine == "mosquitto" else "n/a (event loop)",
            f"{cpu['parse']:.0f}",
            f"{cpu['store']:.0f}",
            f"{cpu['process']:.0f}",
            f"{load:.1f}",
        )
    console.print(table)
    console.print(
        f"machine: {os.cpu_count()} cores; goal: >= 10,000 stored/s with 2 workers on PostgreSQL"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500, help="ENTITLE_HEALTH_BATCH_SIZE")
    parser.add_argument(
        "--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument(
        "--engines", nargs="+", default=["mosquitto", "nats"], choices=["mosquitto", "nats"]
    )
    parser.add_argument("--nats-nodes", type=int, default=3, help="nodes of the NATS cluster")
    asyncio.run(main(parser.parse_args()))
