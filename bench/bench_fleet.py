"""The largest fleet this machine runs: real agents reporting every 10 s to a real cloud.

For each size (1,000, then 5,000, then 10,000 while the previous one held)
it starts Mosquitto (the project's config, every device login written at
start) and ``--workers`` cloud processes on one database
(:class:`simulators.fleet_run.LocalCloud`), runs the fleet over worker
processes of at most 2,500 devices each (:func:`simulators.fleet_run.run_fleet`),
and samples every 5 s: connected devices, reports sent (PUBACK) and stored
(rows in the database). It prints connected devices, RSS per simulated device,
reports/s produced vs stored over the steady window (from one interval
after the last device connected to the moment the fleet is told to stop;
the samples taken while thousands of agents shut down are left out), and
the backlog (sent - stored): its slope over the steady window says whether
the cloud keeps up. A size "holds" when every device stayed connected through the
steady window, the fleet produced at least 95% of one report per device per
interval, and the backlog does not grow (slope < 2% of the input).

    python bench/bench_fleet.py --sizes 1000 5000 10000 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from simulators.fleet import parse_mix, plan_fleet
from simulators.fleet_run import DEVICES_PER_PROCESS, FleetStats, LocalCloud, run_fleet
from simulators.fleet_run import stored_reports as count_stored

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
SAMPLE_S = 5.0
CONNECT_RATE = 100  # devices started per second (a fleet does not all boot in one second)


@dataclass
class Sample:
    t: float
    started: int
    connected: int
    collected: int
    acked: int
    stored: int
    agents_rss: int
    cpu: dict[str, float]  # cumulative CPU seconds by role


@dataclass
class Outcome:
    size: int
    samples: list[Sample] = field(default_factory=list)
    peak_connected: int = 0
    end_connected: int = 0
    rss_per_device: float = 0.0
    produced_per_s: float = 0.0
    stored_per_s: float = 0.0
    backlog_start: int = 0
    backlog_end: int = 0
    backlog_slope: float = 0.0
    drained_s: float | None = None
    cpu_share: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    interval_s: float = 10.0
    steady_connected_min: int = 0
    all_connected_s: float | None = None
    stop_at: float | None = None  # when the fleet was told to stop (seconds from start)

    @property
    def expected_per_s(self) -> float:
        """What every device reporting once an interval produces."""
        return self.size / self.interval_s

    @property
    def holds(self) -> bool:
        """Every device stayed connected, reported on time, and the cloud kept up."""
        produced = max(self.produced_per_s, 1.0)
        return (
            self.error is None
            and self.steady_connected_min == self.size
            and self.produced_per_s >= 0.95 * self.expected_per_s  # devices not starved
            and self.backlog_slope < 0.02 * produced  # backlog growing < 2 % of the input
        )


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield None
        return
    name = f"entitle_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _role(process: psutil.Process) -> str:
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return "gone"
    if "mosquitto" in line:
        return "mosquitto"
    if "cloud serve" in line:
        return "cloud"
    if "multiprocessing" in line:
        return "agents"
    return "other"


def _usage() -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds and RSS bytes of this process's children, by role."""
    cpu: dict[str, float] = {}
    rss: dict[str, int] = {}
    for child in psutil.Process().children(recursive=True):
        role = _role(child)
        try:
            times = child.cpu_times()
            memory = child.memory_info().rss
        except psutil.Error:
            continue
        cpu[role] = cpu.get(role, 0.0) + times.user + times.system
        rss[role] = rss.get(role, 0) + memory
    return cpu, rss


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


async def _one(size: int, args: argparse.Namespace, console: Console) -> Outcome:
    outcome = Outcome(size=size)
    plans = plan_fleet(devices=size, mix=parse_mix(args.mix), fault_fraction=0.0, prefix="fl")
    root = Path(tempfile.mkdtemp(prefix="entitle-bench-fleet-"))
    processes = max(1, math.ceil(size / DEVICES_PER_PROCESS))
    ramp = size / CONNECT_RATE
    latest = FleetStats(devices=size)
    try:
        with (
            _database(args.database) as url,
            LocalCloud(root, plans, workers=args.workers, database_url=url) as cloud,
        ):
            console.print(
                f"[bold]{size:,} devices[/bold]: {processes} agent process(es), "
                f"{args.workers} cloud worker(s), {args.database}; ramp {ramp:.0f} s, "
                f"then {args.duration:.0f} s steady"
            )
            start = time.monotonic()
            finished = asyncio.Event()

            connected_at: float | None = None

            def update(stats: FleetStats) -> None:
                nonlocal latest, connected_at
                latest = stats
                if connected_at is None and stats.connected == size:
                    connected_at = time.monotonic()

            def steady_done(stats: FleetStats) -> bool:
                """Run ``duration`` past one interval after every device connected."""
                done = (
                    connected_at is not None
                    and time.monotonic() - connected_at >= args.interval + args.duration
                )
                if done and outcome.stop_at is None:  # later samples watch the fleet stop
                    outcome.stop_at = time.monotonic() - start
                return done

            async def sample() -> None:
                while not finished.is_set():
                    stored = await asyncio.to_thread(count_stored, cloud.database_url)
                    cpu, rss = _usage()
                    point = Sample(
                        t=time.monotonic() - start,
                        started=latest.started,
                        connected=latest.connected,
                        collected=latest.collected,
                        acked=latest.acked,
                        stored=stored,
                        agents_rss=latest.rss_bytes,
                        cpu=cpu,
                    )
                    outcome.samples.append(point)
                    outcome.rss_mb = {k: v / 2**20 for k, v in rss.items()}
                    console.print(
                        f"  t={point.t:5.0f}s started {point.started:>6,} connected "
                        f"{point.connected:>6,} sent {point.acked:>8,} stored {point.stored:>8,} "
                        f"backlog {point.acked - point.stored:>7,}"
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(finished.wait(), SAMPLE_S)

            async def fleet() -> FleetStats:
                try:
                    return await run_fleet(
                        cloud.logins,
                        host=cloud.host,
                        port=cloud.port,
                        root_keyset=cloud.root_keyset,
                        data_dir=root / "devices",
                        interval_s=args.interval,
                        # a fleet that never connects fully stops after a late margin
                        duration_s=args.duration + args.interval + ramp + 120,
                        processes=processes,
                        ramp_s=ramp,
                        on_update=update,
                        should_stop=steady_done,
                    )
                finally:
                    finished.set()

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(sample())
                final = await tasks.create_task(fleet())
            outcome.end_connected = final.connected
            drain_start = time.monotonic()
            stored = count_stored(cloud.database_url)
            while stored < final.acked and time.monotonic() - drain_start < 120:
                await asyncio.sleep(1)
                stored = count_stored(cloud.database_url)
            if stored >= final.acked:
                outcome.drained_s = time.monotonic() - drain_start
    except Exception as exc:  # a size that breaks the machine is a result, not a crash
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _analyse(outcome, ramp=ramp, interval=args.interval)
    return outcome


def _analyse(outcome: Outcome, *, ramp: float, interval: float) -> None:
    samples = outcome.samples
    if not samples:
        return
    outcome.interval_s = interval
    outcome.peak_connected = max(s.connected for s in samples)
    # the steady window opens one interval after the last device connected (on a
    # loaded machine the connections trail the planned ramp), never before the ramp
    connected_at = next((s.t for s in samples if s.connected == outcome.size), None)
    if connected_at is None:
        return
    outcome.all_connected_s = connected_at
    # ... and closes when the fleet is told to stop: stopping thousands of agents takes
    # a while, and samples taken then would count a fleet that no longer reports
    end = outcome.stop_at if outcome.stop_at is not None else math.inf
    steady = [s for s in samples if max(ramp, connected_at) + interval <= s.t <= end]
    if len(steady) < 2:
        return
    outcome.steady_connected_min = min(s.connected for s in steady)
    first, last = steady[0], steady[-1]
    span = last.t - first.t
    outcome.produced_per_s = (last.collected - first.collected) / span
    outcome.stored_per_s = (last.stored - first.stored) / span
    outcome.backlog_start = first.acked - first.stored
    outcome.backlog_end = last.acked - last.stored
    outcome.backlog_slope = _slope([(s.t, s.acked - s.stored) for s in steady])
    outcome.rss_per_device = max(s.agents_rss for s in steady) / outcome.size
    cpu_span = {
        role: (last.cpu.get(role, 0.0) - first.cpu.get(role, 0.0)) / span for role in last.cpu
    }
    outcome.cpu_share = {role: round(v * 100) for role, v in cpu_span.items()}


def _table(outcomes: list[Outcome], args: argparse.Namespace) -> Table:
    table = Table(
        title=f"simulated fleet, one report every {args.interval:.0f} s per device "
        f"({args.database}, {args.workers} cloud worker(s), {psutil.cpu_count()} cores)",
        title_justify="left",
    )
    for column in (
        "devices",
        "connected (peak / steady min)",
        "all connected at",
        "RSS / device",
        "reports/s produced (expected)",
        "reports/s stored",
        "backlog start → end",
        "backlog slope",
        "CPU % (agents / cloud / mosquitto)",
        "holds",
    ):
        table.add_column(column, justify="right")
    for o in outcomes:
        cpu = " / ".join(str(o.cpu_share.get(r, 0)) for r in ("agents", "cloud", "mosquitto"))
        table.add_row(
            f"{o.size:,}",
            f"{o.peak_connected:,} / {o.steady_connected_min:,}",
            "never" if o.all_connected_s is None else f"{o.all_connected_s:.0f} s",
            f"{o.rss_per_device / 1024:,.0f} KiB",
            f"{o.produced_per_s:,.0f} ({o.expected_per_s:,.0f})",
            f"{o.stored_per_s:,.0f}",
            f"{o.backlog_start:,} → {o.backlog_end:,}",
            f"{o.backlog_slope:+.1f}/s",
            cpu,
            "yes" if o.holds else f"no{': ' + o.error if o.error else ''}",
        )
    return table


async def main(args: argparse.Namespace) -> None:
    console = Console()
    outcomes = []
    for size in args.sizes:
        outcome = await _one(size, args, console)
        outcomes.append(outcome)
        rss = ", ".join(f"{k} {v:,.0f} MiB" for k, v in sorted(outcome.rss_mb.items()))
        console.print(
            f"  {size:,}: drained after stop in "
            f"{'n/a' if outcome.drained_s is None else f'{outcome.drained_s:.0f} s'}; RSS {rss}"
        )
        console.print(_table(outcomes, args))
        if not outcome.holds:
            console.print(f"{size:,} devices did not hold; larger sizes not tried")
            break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 10000])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0, help="steady seconds")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--workers", type=int, default=2, help="cloud worker processes")
    parser.add_argument("--mix", default="gateway:60,camera:30,counter:10")
    asyncio.run(main(parser.parse_args()))
