"""One shard of a simulated fleet: real agents against real firmware emulators.

Every device is an :class:`agent.runtime.Agent` with its own MQTT connection
and broker login, its own SQLite store and outbox in its own folder, its own
verifier, and a :class:`agent.firmware.FirmwareClient` speaking the serial
protocol to its own emulator over :class:`agent.firmware.InProcessLink`, with
the enforcer a real device has: :class:`agent.enforcers.FirmwareEnforcer`
pushes the entitled features (SET_FEATURES) to that emulator, and a camera's
firmware prunes its own recordings by the ``video_retention`` days it was
given (so no agent-side pruner walks the folder as well).
What the devices share is only the simulation's: the event loop, the
process and the machine — and so one host sampler per process
(:class:`agent.hoststats.HostSampler` reading the machine at most once a
second), since they all run on one host; each device's firmware figures
(temperature, disk, counters) are its own emulator's. Large fleets are split over worker processes
(:func:`worker_main`), each running :func:`run_shard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing.synchronize
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulators.fleet import NOISE, DeviceLogin

__all__ = ["ShardJob", "ShardStats", "raise_fd_limit", "run_shard", "shards_of", "worker_main"]

log = logging.getLogger(__name__)
_STATS_EVERY_S = 1.0
# the enforcer asks the firmware who it is this often (a reboot loses its features);
# 10,000 devices at the agent's default 10 s would double the firmware traffic
_PROBE_MIN_S = 60.0


@dataclass(frozen=True, slots=True)
class ShardJob:
    """What one worker runs (picklable: it crosses to a spawned process)."""

    shard: int
    logins: Sequence[DeviceLogin]
    host: str
    port: int
    root_keyset: bytes
    data_dir: Path
    interval_s: float
    ramp_s: float  # connections are spread over this long (no thundering herd)
    protocol: int = 5


@dataclass(frozen=True, slots=True)
class ShardStats:
    """A shard's figures at one moment (sent to the parent every second)."""

    shard: int
    devices: int
    started: int
    connected: int
    collected: int
    acked: int
    publish_failures: int
    queued: int
    rss_bytes: int
    done: bool = False


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raise_fd_limit() -> None:
    """Each device holds ~7 descriptors (socket, two SQLite files in WAL mode): use the hard cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def shards_of(logins: Sequence[DeviceLogin], processes: int) -> list[Sequence[DeviceLogin]]:
    """Logins dealt round robin over ``processes`` shards (one per worker process)."""
    count = max(1, processes)
    return [logins[i::count] for i in range(count)]


def _build_agent(login: DeviceLogin, job: ShardJob, index: int, host: Any) -> Any:
    from agent.enforcers import FirmwareEnforcer
    from agent.firmware import FirmwareClient, InProcessLink
    from agent.runtime import open_agent
    from agent.session import Connection
    from firmware_stubs import Faults, make_emulator

    plan = login.plan
    faults = Faults()
    if plan.fault == "noisy_line":
        faults.noisy_line = NOISE
    elif plan.fault is not None:
        setattr(faults, plan.fault, True)
    folder = job.data_dir / plan.device_id
    folder.mkdir(parents=True, exist_ok=True)
    emulator = make_emulator(
        plan.kind,
        recordings=folder / "recordings" if plan.kind == "camera" else None,
        serial_number=f"SIM{index:07d}",
        faults=faults,
        seed=index,
    )
    firmware = FirmwareClient(InProcessLink(emulator), timeout_s=0.5, retries=2)
    enforcer = FirmwareEnforcer(firmware, probe_s=max(job.interval_s, _PROBE_MIN_S))
    return open_agent(
        device_id=plan.device_id,
        data_dir=folder,
        connection=Connection(
            host=job.host,
            port=job.port,
            username=plan.device_id,
            password=login.password,
            protocol=job.protocol,
        ),
        root_keyset=job.root_keyset,
        enforcers=[enforcer],
        firmware=firmware,
        kind=plan.kind,
        health_interval_s=job.interval_s,
        host=host,
    )


def _stats(job: ShardJob, agents: list[Any], *, done: bool = False) -> ShardStats:
    connected = collected = acked = failures = queued = 0
    for agent in agents:
        if agent.session is not None and agent.session.connected.is_set():
            connected += 1
        collected += agent.health.collected
        acked += agent.publisher.published
        failures += agent.publisher.failures
        queued += max(0, agent.health.collected - agent.publisher.published)
    return ShardStats(
        shard=job.shard,
        devices=len(job.logins),
        started=len(agents),
        connected=connected,
        collected=collected,
        acked=acked,
        publish_failures=failures,
        queued=queued,
        rss_bytes=_rss_bytes(),
        done=done,
    )


async def run_shard(
    job: ShardJob, *, stop: Callable[[], bool], report: Callable[[ShardStats], None]
) -> ShardStats:
    """Run the shard's agents until ``stop()`` is true; ``report`` gets figures every second."""
    from agent.session import quiet_closed_sockets

    with quiet_closed_sockets(asyncio.get_running_loop()):
        return await _run_agents(job, stop=stop, report=report)


async def _run_agents(
    job: ShardJob, *, stop: Callable[[], bool], report: Callable[[ShardStats], None]
) -> ShardStats:
    agents: list[Any] = []
    last = _stats(job, agents)
    tasks: list[asyncio.Task[None]] = []
    step = job.ramp_s / max(1, len(job.logins))
    started_at = time.monotonic()
    from agent.hoststats import HostSampler

    host = HostSampler(disk_path=job.data_dir, reuse_s=1.0)  # the machine they all run on
    try:
        for index, login in enumerate(job.logins):
            delay = started_at + index * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if stop():
                break
            agent = _build_agent(login, job, job.shard * 1_000_000 + index, host)
            agents.append(agent)
            tasks.append(asyncio.create_task(agent.run(), name=f"agent-{agent.device_id}"))
            if index % 200 == 0:
                report(_stats(job, agents))
        while not stop():
            last = _stats(job, agents)
            report(last)
            await asyncio.sleep(_STATS_EVERY_S)
        last = _stats(job, agents)
    finally:
        pending = {t for t in tasks if not t.done()}
        while pending:  # an agent swallowing one cancel gets another
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await asyncio.sleep(0)  # the add_writer calls queued by the last cancels
        for agent in agents:
            with contextlib.suppress(Exception):
                agent.close()
    # the connections as they were before the shard stopped its agents
    final = replace(_stats(job, agents, done=True), connected=last.connected)
    report(final)
    return final


def worker_main(
    job: ShardJob,
    queue: multiprocessing.Queue[ShardStats],
    stop: multiprocessing.synchronize.Event,
) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=logging.WARNING, format=f"shard {job.shard}: %(message)s")
    raise_fd_limit()
    asyncio.run(run_shard(job, stop=stop.is_set, report=queue.put))
