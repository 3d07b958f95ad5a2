"""Grant → enforced latency on loopback, beside the raw broker round trip.

Runs the demo's real stack (Mosquitto, the cloud on HTTP with SQLite, real
agents), then alternates grant and revoke through the public API and times
each from the HTTP request to the moment every agent's decision has
flipped (watched while the request runs), beside the HTTP call's own time
(one transaction: access check, grant, tokens signed, audit, outbox; then
the publish and the published mark). In the same run it times bare MQTT publish → receive
through the same broker, the floor under any figure of ours. Agents, cloud
and bench share one process and event loop (the demo stack), as on a
developer machine; the load average is printed beside the figures.

    python bench/bench_latency.py --grants 200 --devices 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from rich.console import Console
from rich.progress import track

from entitle.demo import DemoStack, running_stack

YEAR = 366 * 86400


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _raw_round_trips(stack: DemoStack, n: int) -> list[float]:
    out = []
    async with stack.ops_client() as c:
        await c.subscribe("entitle/v1/dev/bench/health", qos=1)
        messages = c.messages
        for i in range(n):
            start = time.perf_counter()
            await c.publish("entitle/v1/dev/bench/health", str(i).encode(), qos=1)
            async for _ in messages:
                break
            out.append(time.perf_counter() - start)
    return out


async def main(grants: int, devices: int, database_url: str | None) -> None:
    console = Console()
    async with running_stack(devices=devices, database_url=database_url) as stack:
        raw = await _raw_round_trips(stack, grants)
        samples, http = [], []
        for i in track(range(grants), description="grant/revoke", console=console):
            want = i % 2 == 0
            start = time.perf_counter()
            # the agents are watched while the request runs: enforcement may come first
            enforced = asyncio.create_task(
                stack.wait_until(lambda a, w=want: a.check("remote_access")[0] is w, within=10)
            )
            if want:
                await stack.grant("remote_access", until=int(time.time()) + YEAR)
            else:
                await stack.revoke("remote_access")
            http.append(time.perf_counter() - start)
            samples.append(await enforced)
    ms = [s * 1000 for s in samples]
    raw_ms = [s * 1000 for s in raw]
    http_ms = [s * 1000 for s in http]
    console.print(
        f"devices per installation: {devices}; changes: {grants}; "
        f"database: {database_url or 'sqlite'}"
    )
    console.print(
        f"grant→enforced on all devices: p50 {_pct(ms, 0.5):.1f} ms, "
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
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.grants, args.devices, args.database_url))
