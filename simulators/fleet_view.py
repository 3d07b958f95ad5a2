"""``entitle sim fleet``: plan, register, run with a live display, summarise.

Two targets:

* the configured cloud (``--api-url``, default ``http://{ENTITLE_HTTP_HOST}:
  {ENTITLE_HTTP_PORT}``, and an admin API key in ``--api-key`` or
  ``ENTITLE_API_KEY``): devices are registered through the public API and
  connect to the broker the API names; reports stored are counted only when
  ``--database-url`` (the cloud's database) is given;
* ``--local``: a fresh Mosquitto and cloud in a temporary folder
  (:class:`simulators.fleet_run.LocalCloud`), devices written straight into
  its database, which is what the benchmarks use for thousands of devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from simulators.fleet import DevicePlan, fleet_diagnoses, register_via_api
from simulators.fleet_run import DEVICES_PER_PROCESS, FleetStats, LocalCloud, run_fleet
from simulators.fleet_run import stored_reports as count_stored

__all__ = ["FleetOptions", "simulate", "summary_table"]


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """What ``entitle sim fleet`` was asked for."""

    interval_s: float
    duration_s: float | None
    processes: int | None
    local: bool
    api_url: str
    api_key: str | None
    database_url: str | None
    data_dir: Path | None
    settle_s: float = 10.0  # after the agents stop, let the cloud commit what it got


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.completed:>8,.0f} / {task.total:,.0f}"),
    )


def summary_table(
    stats: FleetStats,
    *,
    plans: Sequence[DevicePlan],
    stored: int | None,
    verdicts: dict[str, int] | None,
    elapsed_s: float,
) -> Table:
    """The final figures: connections, reports, faults by knob, diagnoses by verdict."""
    table = Table(title="fleet summary", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("devices", f"{stats.devices:,}")
    table.add_row("connected (at the end)", f"{stats.connected:,}")
    table.add_row("reports collected", f"{stats.collected:,}")
    table.add_row("reports sent and acked (PUBACK)", f"{stats.acked:,}")
    table.add_row("reports stored by the cloud", "n/a" if stored is None else f"{stored:,}")
    table.add_row("publish interruptions", f"{stats.publish_failures:,}")
    table.add_row("run time", f"{elapsed_s:.0f} s")
    table.add_row("RSS per device (agents' processes)", _per_device(stats))
    faults = Counter(p.fault for p in plans if p.fault)
    for knob, n in sorted(faults.items()):
        table.add_row(f"fault injected: {knob}", f"{n:,}")
    if verdicts is None:
        table.add_row("diagnoses", "n/a (cloud API not reachable)")
    else:
        for verdict, n in sorted(verdicts.items()):
            table.add_row(f"diagnosis: {verdict}", f"{n:,}")
    return table


def _per_device(stats: FleetStats) -> str:
    if not stats.started:
        return "n/a"
    return f"{stats.rss_bytes / stats.started / 1024:,.0f} KiB"


async def simulate(plans: Sequence[DevicePlan], options: FleetOptions, console: Console) -> int:
    """Register and run ``plans``, print the summary; the exit code."""
    own = options.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="entitle-fleet-")) if own else options.data_dir
    assert root is not None
    local: LocalCloud | None = None
    try:
        with _progress() as progress:
            task = progress.add_task("registering devices", total=len(plans))
            if options.local:
                local = LocalCloud(root, plans, database_url=options.database_url)
                await asyncio.to_thread(local.start)
                progress.update(task, completed=len(plans))
                logins, keyset = local.logins, local.root_keyset
                host, port = local.host, local.port
                api = local.async_api()
                database_url: str | None = local.database_url
            else:
                if not options.api_key:
                    console.print(
                        "[red]error:[/red] no API key: pass --api-key or set ENTITLE_API_KEY "
                        "(make one with 'entitle cloud apikey create --name sim'), or use --local"
                    )
                    return 2
                api = httpx.AsyncClient(
                    base_url=options.api_url,
                    headers={"Authorization": f"Bearer {options.api_key}"},
                    timeout=60,
                )
                logins, keyset, (host, port) = await register_via_api(
                    api, plans, on_done=lambda n: progress.advance(task, n)
                )
                database_url = options.database_url
        async with api:
            return await _run(
                plans, logins, keyset, host, port, root, options, console, api, database_url
            )
    finally:
        if local is not None:
            await asyncio.to_thread(local.stop)
        if own:
            shutil.rmtree(root, ignore_errors=True)


async def _run(
    plans: Sequence[DevicePlan],
    logins: Sequence[object],
    keyset: bytes,
    host: str,
    port: int,
    root: Path,
    options: FleetOptions,
    console: Console,
    api: httpx.AsyncClient,
    database_url: str | None,
) -> int:
    processes = options.processes
    if processes is None:
        processes = max(1, math.ceil(len(plans) / DEVICES_PER_PROCESS))
    progress = _progress()
    started = progress.add_task("agents started", total=len(plans))
    connected = progress.add_task("connected", total=len(plans))
    acked = progress.add_task("reports acked", total=None)
    begin = time.monotonic()

    def show(stats: FleetStats) -> None:
        progress.update(started, completed=stats.started)
        progress.update(connected, completed=stats.connected)
        progress.update(acked, completed=stats.acked, total=max(stats.collected, 1))

    with Live(progress, console=console, refresh_per_second=4):
        stats = await run_fleet(
            logins,  # type: ignore[arg-type]
            host=host,
            port=port,
            root_keyset=keyset,
            data_dir=root / "devices",
            interval_s=options.interval_s,
            duration_s=options.duration_s,
            processes=processes,
            on_update=show,
        )
    elapsed = time.monotonic() - begin
    stored = None
    if database_url is not None:
        deadline = time.monotonic() + options.settle_s
        stored = await asyncio.to_thread(count_stored, database_url)
        while stored < stats.acked and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            stored = await asyncio.to_thread(count_stored, database_url)
    verdicts = None
    with contextlib.suppress(httpx.HTTPError):
        verdicts, _ = await fleet_diagnoses(api)
    console.print()
    console.print(
        summary_table(stats, plans=plans, stored=stored, verdicts=verdicts, elapsed_s=elapsed)
    )
    return 0
