"""Grant → enforced latency on loopback, beside the raw broker round trip.

Runs the demo's real stack (Mosquitto, the cloud on HTTP with SQLite, real
agents), then alternates grant and revoke through the public API and times
each from the HTTP request to the moment every agent's decision has
flipped. In the same run it times bare MQTT publish → receive through the
same broker, the floor under any figure of ours.

    python bench/bench_latency.py --grants 200 --devices 3
"""

from __future__ import annotations

import argparse
import asyncio
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
        samples = []
        for i in track(range(grants), description="grant/revoke", console=console):
            start = time.perf_counter()
            if i % 2 == 0:
                await stack.grant("remote_access", until=int(time.time()) + YEAR)
                await stack.wait_until(lambda a: a.check("remote_access")[0], within=10)
            else:
                await stack.revoke("remote_access")
                await stack.wait_until(lambda a: not a.check("remote_access")[0], within=10)
            samples.append(time.perf_counter() - start)
    ms = [s * 1000 for s in samples]
    raw_ms = [s * 1000 for s in raw]
    console.print(
        f"devices per installation: {devices}; changes: {grants}; "
        f"database: {database_url or 'sqlite'}"
    )
    console.print(
        f"grant→enforced on all devices: p50 {_pct(ms, 0.5):.1f} ms, "
        f"p99 {_pct(ms, 0.99):.1f} ms, mean {statistics.mean(ms):.1f} ms (goal p99 < 50)"
    )
    console.print(
        f"raw MQTT QoS1 publish→receive (same broker, same run): "
        f"p50 {_pct(raw_ms, 0.5):.2f} ms, p99 {_pct(raw_ms, 0.99):.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=200)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.grants, args.devices, args.database_url))
