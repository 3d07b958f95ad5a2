"""Reconnect storm (issue 16, must show 3): restart the broker under N devices.

N light devices (:class:`simulators.storm.StormDevice`, default 10,000 over
worker processes of 2,500): each logs in as itself on the agent's own MQTT
session, receives its retained token (issued by the running cloud: the fleet is
registered in the store, every installation granted, every device queued on the
re-sign queue, and the cloud's re-sign job signs and publishes each first token),
verifies it in full with the agent's verifier, enforces it (decisions checked
against the grants) and reports health through the agent's health publisher.
Once every device enforces and the reports have run a while, the broker is
restarted: Mosquitto with SIGTERM (persistence saved) and started again on the
same port; on ``--engine nats`` one node of a 3-node cluster is killed -9 and
started again.

Printed: per device, the time from the restart until it is connected again and
until it has received, verified and enforced its retained token again
(p50 / p99 / max; goal: all within 60 s); reports PUBACKed vs stored (lost,
duplicates: every PUBACKed report must be stored exactly once), the backlog
(built - stored) over time and how long it took to fall back to its level before
the restart, and the final drain once devices stop building reports. Beside it,
the raw limit of the same run: how fast a fresh broker with the same N logins
accepts N MQTT 5 logins from a C client (``bench/connstorm.c``, epoll, all at
once and 500 in flight), and the machine's load.

    python bench/bench_storm.py --devices 10000
    python bench/bench_storm.py --devices 10000 --engine nats
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue as queues
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from simulators.fleet import parse_mix, plan_fleet
from simulators.fleet_run import LocalCloud, stored_reports
from simulators.fleet_worker import shards_of
from simulators.storm import (
    DeviceResult,
    StormJob,
    StormStats,
    losses,
    seed_storm,
    stored_by_device,
    storm_worker_main,
    tokens_pending,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
DEVICES_PER_PROCESS = 2500
HERE = Path(__file__).resolve().parent


@dataclass
class Sample:
    t: float  # seconds since the restart (negative before)
    connected: int
    reconnected: int
    reenforced: int
    waiting: int  # reconnected, not re-enforced since (simulators.storm.StormStats)
    collected: int
    acked: int
    queued: int
    stored: int

    @property
    def backlog(self) -> int:
        """Reports built but not stored yet (queued on devices, in flight, in the broker)."""
        return self.collected - self.stored


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    results: list[DeviceResult] = field(default_factory=list)
    t_down: float = 0.0
    t_up: float = 0.0
    drained_s: float | None = None
    final_drain_s: float | None = None
    loads: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    name = f"entitle_storm_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the raw limit ------------------------------------------------------------------


def _connstorm(root: Path) -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    binary = root / "connstorm"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(HERE / "connstorm.c")], check=True)
    return binary


def _run_connstorm(
    binary: Path, host: str, port: int, logins: Path, cap: int, protocol: int
) -> str:
    done = subprocess.run(
        [str(binary), host, str(port), str(logins), str(cap), str(protocol)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    words = done.stdout.split()
    if len(words) != 14:
        return f"failed: {done.stdout.strip()} {done.stderr.strip()[:200]}"
    accepted, seconds = int(words[3]), float(words[7])
    shares = ", ".join(
        f"{name} {'never' if float(v) < 0 else f'{float(v):.1f} s'}"
        for name, v in zip(words[8::2], words[9::2], strict=True)
    )
    return (
        f"{accepted:,} of {int(words[1]):,} accepted, the last after {seconds:.1f} s "
        f"({accepted / seconds:,.0f} logins/s); {shares}"
    )


def raw_logins_mosquitto(
    root: Path, devices: Sequence[str], inflight: Sequence[int]
) -> dict[int, str]:
    """A fresh Mosquitto with N device logins; the C client's figures per in-flight cap."""
    from broker.mosquitto import MosquittoBroker
    from common.credentials import new_password

    binary = _connstorm(root)
    if binary is None:
        return {n: "no C compiler here: not measured" for n in inflight}
    logins = {device: new_password() for device in devices}
    (root / "logins.txt").write_text("".join(f"{d} {p}\n" for d, p in logins.items()))
    with MosquittoBroker(
        root / "raw-broker", accounts={"cloud": new_password(), **logins}
    ) as broker:
        return {
            cap: _run_connstorm(binary, broker.host, broker.port, root / "logins.txt", cap, 5)
            for cap in inflight
        }


def raw_logins_cluster(
    root: Path, cloud: LocalCloud, node: int, inflight: Sequence[int]
) -> dict[int, str]:
    """The storm's own NATS cluster before its devices start: the devices' N logins
    (each through the auth callout) against one node; the connections close after."""
    binary = _connstorm(root)
    if binary is None:
        return {n: "no C compiler here: not measured" for n in inflight}
    path = root / "logins.txt"
    path.write_text("".join(f"{lg.device_id} {lg.password}\n" for lg in cloud.logins))
    port = cloud.broker.nodes[node].mqtt
    return {cap: _run_connstorm(binary, cloud.host, port, path, cap, 4) for cap in inflight}


# --- the storm ----------------------------------------------------------------------


def _percentiles(values: Sequence[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return f"p50 {at(0.5):.1f} s, p99 {at(0.99):.1f} s, max {ordered[-1]:.1f} s"


class Fleet:
    """The shard processes and their summed figures."""

    def __init__(self, jobs: Sequence[StormJob]) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue: Any = context.Queue()
        self.mark: Any = context.Value("d", 0.0)
        self.reporting = context.Event()  # set once every device enforces
        self.stop = context.Event()
        self.latest: dict[int, StormStats] = {}
        self.workers = [
            context.Process(
                target=storm_worker_main,
                args=(job, self.queue, self.mark, self.reporting, self.stop),
                name=f"storm-{job.shard}",
            )
            for job in jobs
        ]
        for worker in self.workers:
            worker.start()

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.latest.values())

    def drain_queue(self) -> None:
        while True:
            try:
                stats = self.queue.get_nowait()
            except queues.Empty:
                return
            self.latest[stats.shard] = stats

    def finish(self, timeout: float = 120) -> list[DeviceResult]:
        self.stop.set()
        deadline = time.monotonic() + timeout
        while (
            sum(1 for s in self.latest.values() if s.done) < len(self.workers)
            and time.monotonic() < deadline
        ):
            try:
                stats = self.queue.get(timeout=1)
            except queues.Empty:
                continue
            self.latest[stats.shard] = stats
        for worker in self.workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
                worker.join()
        return [r for s in self.latest.values() for r in s.results]


def _print_raw(console: Console, run: Run) -> None:
    for cap, text in run.raw.items():  # type: ignore[attr-defined]
        console.print(f"  C client, {cap:,} connections in flight: {text}")


async def storm(args: argparse.Namespace, console: Console) -> Run:
    run = Run()
    plans = plan_fleet(
        devices=args.devices, mix=parse_mix(args.mix), fault_fraction=0.0, prefix="st"
    )
    root = Path(tempfile.mkdtemp(prefix="entitle-bench-storm-"))
    processes = args.processes or max(1, math.ceil(args.devices / DEVICES_PER_PROCESS))
    try:
        run.loads["start"] = os.getloadavg()
        caps = [args.devices, 500, 100]
        if args.engine == "mosquitto":
            console.print(f"raw limit: a fresh Mosquitto with {args.devices:,} device logins ...")
            run.raw = raw_logins_mosquitto(root, [p.device_id for p in plans], caps)  # type: ignore[attr-defined]
            _print_raw(console, run)
        with (
            _database(args.database) as url,
            LocalCloud(
                root / "storm",
                plans,
                workers=args.workers,
                database_url=url,
                persistence=True,
                engine=args.engine,
            ) as cloud,
        ):
            if args.engine == "nats":
                console.print(f"raw limit: the cluster's node {args.node + 1}, device logins ...")
                run.raw = raw_logins_cluster(root, cloud, args.node, caps)  # type: ignore[attr-defined]
                _print_raw(console, run)
            expected = seed_storm(cloud.database_url, now=int(time.time()))
            began = time.monotonic()
            while (left := await asyncio.to_thread(tokens_pending, cloud.database_url)) > 0:
                if time.monotonic() - began > args.setup_timeout:
                    raise RuntimeError(f"{left:,} first tokens still not published")
                await asyncio.sleep(1)
            console.print(
                f"the cloud's re-sign job signed and published {args.devices:,} first tokens "
                f"(retained) in {time.monotonic() - began:.1f} s"
            )
            jobs = [
                StormJob(
                    shard=i,
                    logins=list(shard),
                    expected={login.device_id: expected[login.device_id] for login in shard},
                    host=cloud.host,
                    port=cloud.port,
                    root_keyset=cloud.root_keyset,
                    interval_s=args.interval,
                    ramp_s=args.devices / args.connect_rate,
                    protocol=cloud.protocol,
                    fallbacks=cloud.fallbacks,
                )
                for i, shard in enumerate(shards_of(cloud.logins, processes))
            ]
            console.print(
                f"[bold]{args.devices:,} devices[/bold] in {processes} process(es), "
                f"{args.workers} cloud worker(s), {args.database}, a report every "
                f"{args.interval:.0f} s per device; first tokens from the cloud's re-sign job"
            )
            fleet = Fleet(jobs)
            try:
                await _phases(args, console, run, fleet, cloud)
            finally:
                run.results = await asyncio.to_thread(fleet.finish)
            run.loads["end"] = os.getloadavg()
            stored = await asyncio.to_thread(stored_by_device, cloud.database_url)
            run.exactly_once = losses(run.results, stored)  # type: ignore[attr-defined]
            run.stored_total = sum(len(v) for v in stored.values())  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return run


async def _phases(
    args: argparse.Namespace, console: Console, run: Run, fleet: Fleet, cloud: LocalCloud
) -> None:
    n = args.devices
    last_print = 0.0

    async def sample(phase: str) -> Sample:
        nonlocal last_print
        fleet.drain_queue()
        stored = await asyncio.to_thread(stored_reports, cloud.database_url)
        fleet.drain_queue()
        now = time.monotonic()
        point = Sample(
            t=now - run.t_down if run.t_down else -1.0,
            connected=fleet.total("connected"),
            reconnected=fleet.total("reconnected"),
            reenforced=fleet.total("reenforced"),
            waiting=fleet.total("waiting"),
            collected=fleet.total("collected"),
            acked=fleet.total("acked"),
            queued=fleet.total("queued"),
            stored=stored,
        )
        if run.t_down:
            run.samples.append(point)
        if now - last_print >= args.print_every:
            last_print = now
            console.print(
                f"  {phase:>9} t={point.t:6.1f}s connected {point.connected:>6,} enforcing "
                f"{fleet.total('enforced'):>6,} re-enforced {point.reenforced:>6,} built "
                f"{point.collected:>8,} sent {point.acked:>8,} stored {point.stored:>8,} "
                f"backlog {point.backlog:>7,} resent {fleet.total('resent')} "
                f"wrong {fleet.total('wrong')} "
                f"rejected {fleet.total('rejected')}"
            )
        return point

    deadline = time.monotonic() + args.setup_timeout
    while fleet.total("enforced") < n:
        if time.monotonic() > deadline or not any(w.is_alive() for w in fleet.workers):
            raise RuntimeError(f"only {fleet.total('enforced')} of {n} devices enforce")
        await sample("setup")
        await asyncio.sleep(1)
    console.print(f"every device enforces its first token; {args.steady:.0f} s of reports")
    fleet.reporting.set()
    before: list[Sample] = []
    steady_end = time.monotonic() + args.steady
    while time.monotonic() < steady_end:
        before.append(await sample("steady"))
        await asyncio.sleep(1)
    level = max(s.backlog for s in before[len(before) // 2 :])

    run.loads["restart"] = os.getloadavg()
    least = 1 if args.engine == "nats" else n  # devices a restart must cut off
    run.t_down = time.monotonic()
    fleet.mark.value = run.t_down
    if args.engine == "nats":
        console.print(f"kill -9 node {args.node + 1} (backlog before: up to {level:,} reports)")
        cloud.broker.kill_node(args.node)
        cloud.broker.start_node(args.node)
    else:
        console.print(f"restarting Mosquitto (backlog before: up to {level:,} reports)")
        cloud.broker.restart()  # SIGTERM: Mosquitto saves retained messages and sessions
    run.t_up = time.monotonic()
    console.print(f"  broker back after {run.t_up - run.t_down:.2f} s")

    deadline = run.t_up + args.timeout
    while True:
        point = await sample("storm")
        # every device connected, and every one cut off re-enforced since
        done = point.connected == n and point.reconnected >= least and point.waiting == 0
        if run.drained_s is None and done and point.backlog <= level:
            run.drained_s = time.monotonic() - run.t_up
        if done and (run.drained_s is not None or time.monotonic() > deadline):
            break
        if time.monotonic() > deadline:
            console.print(
                f"[red]{point.reconnected - point.waiting:,} of {point.reconnected:,} "
                "re-enforced, "
                f"{point.connected:,} of {n:,} connected[/red]"
            )
            break
        await asyncio.sleep(1)
    console.print("devices stop building reports; the final drain")
    fleet.reporting.clear()
    stop_at = time.monotonic()
    deadline = stop_at + args.timeout
    while time.monotonic() < deadline:
        point = await sample("drain")
        if point.queued == 0 and point.stored >= point.acked:
            run.final_drain_s = time.monotonic() - stop_at
            break
        await asyncio.sleep(1)


def report(run: Run, args: argparse.Namespace, console: Console) -> None:
    n = args.devices
    reconnect = [
        min(c for c in r.connects if c >= run.t_down) - run.t_down
        for r in run.results
        if any(c >= run.t_down for c in r.connects)
    ]
    enforced = [
        min(e for e in r.enforced if e >= run.t_down) - run.t_down
        for r in run.results
        if any(e >= run.t_down for e in r.enforced)
    ]
    within = sum(1 for e in enforced if e <= 60)
    affected = len(reconnect)  # the devices the restart cut off
    wrong = sum(r.wrong for r in run.results)
    rejected = sum(sum(r.rejected.values()) for r in run.results)
    acked = sum(len(r.acked_seqs) for r in run.results)
    resent = sum(r.resent for r in run.results)
    resent_devices = sum(1 for r in run.results if r.resent)
    collected = sum(r.collected for r in run.results)
    peak = max((s.backlog for s in run.samples), default=0)
    exact = getattr(run, "exactly_once", {})
    table = Table(
        title=f"reconnect storm, {args.engine}, {n:,} devices, {args.database}, "
        f"{args.workers} cloud worker(s), {os.cpu_count()} cores",
        title_justify="left",
    )
    table.add_column("measure")
    table.add_column("figure", justify="right")
    rows = [
        ("broker down → accepting again", f"{run.t_up - run.t_down:.2f} s"),
        ("devices cut off by the restart (connected again since)", f"{affected:,} of {n:,}"),
        (
            "connected again (from the restart)",
            _percentiles(reconnect),
        ),
        (
            "retained token re-received, verified, enforced right",
            f"{len(enforced):,} of {affected:,}; " + _percentiles(enforced),
        ),
        ("… within 60 s (goal: all)", f"{within:,} of {affected:,}"),
        ("wrong decisions / rejected tokens", f"{wrong} / {rejected}"),
        (
            "reports built / PUBACKed / stored",
            f"{collected:,} / {acked:,} / {getattr(run, 'stored_total', 0):,}",
        ),
        (
            "PUBACKed not stored"
            + (" (lost)" if run.final_drain_s is not None else " yet: the drain did not finish")
            + " / stored twice / stored never acked",
            f"{exact.get('lost', '?')} / {exact.get('duplicates', '?')} / "
            f"{exact.get('stored_not_acked', '?')}",
        ),
        (
            "reports PUBACKed, dropped, asked again by the cloud's gap repair (resend_health)",
            f"{resent:,} from {resent_devices:,} devices",
        ),
        ("backlog peak after the restart (built − stored)", f"{peak:,}"),
        (
            "backlog back to its level before the restart",
            "not within the run" if run.drained_s is None else f"{run.drained_s:.0f} s after up",
        ),
        (
            "final drain once devices stop building",
            "not within the run" if run.final_drain_s is None else f"{run.final_drain_s:.0f} s",
        ),
    ]
    for cap, text in getattr(run, "raw", {}).items():
        rows.append((f"raw: C client logins, {cap:,} in flight, fresh Mosquitto", text))
    rows.append(
        (
            "load average (1 min) at start / restart / end",
            " / ".join(
                f"{run.loads[k][0]:.1f}" for k in ("start", "restart", "end") if k in run.loads
            ),
        )
    )
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


async def main(args: argparse.Namespace) -> None:
    console = Console(width=240)
    run = await storm(args, console)
    report(run, args, console)


if __name__ == "__main__":
    # a background run ignores SIGINT: SIGTERM stops it with its clean-up (brokers, clouds,
    # the benchmark database)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--engine", choices=["mosquitto", "nats"], default="mosquitto")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--workers", type=int, default=2, help="cloud worker processes")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between reports")
    parser.add_argument("--steady", type=float, default=30.0, help="reporting before the restart")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="devices started/s")
    parser.add_argument("--setup-timeout", type=float, default=900.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="after the restart")
    parser.add_argument("--print-every", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=0, help="device processes (0: auto)")
    parser.add_argument("--node", type=int, default=1, help="NATS node to kill (0-based)")
    parser.add_argument("--mix", default="gateway:60,camera:30,counter:10")
    asyncio.run(main(parser.parse_args()))
