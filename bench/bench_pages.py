"""Server time of the dashboard's heaviest pages beside the raw SQL they run (issue 15, show 4).

For each database (a temp SQLite file, a throw-away PostgreSQL database) it builds
the cloud app in-process (its lifespan: migrations, jobs), generates a fleet, signs
in as an admin and measures, sequentially, the time from request to complete
response through the ASGI app (no network):

- the fleet overview's first page (``GET /fleet``: counts + 50 rows) and the API's
  ``GET /api/v1/health/fleet?limit=100``;
- an installation page (``GET /installations/{id}``, 10 controllers);
- a device page (``GET /devices/{id}``, its kept diagnosis) and its charts' data
  (``GET /devices/{id}/charts.json`` for 24 h and 7 days), and the command fragment
  the page polls every second while a command is pending.

Beside each: "raw", every SQL statement that request ran (captured once from the
engine) replayed on the bare DBAPI connection, same parameters, same rows. And the
cost the verdict table removes from each fleet request: one full verdict pass over
every device (what ``GET /health/fleet`` did per request before).

What is generated (printed again at the start of each run): 10,000 devices (1,000
installations of 10), one current token each, a state row with the latest report;
raw 10-second reports for 7 days (60,480 each) for the devices whose pages are
measured; the last 10 minutes (60 reports) for every other device. The full 7 days
at 10 s for all 10,000 would be 605 million rows; the fleet and installation pages
read no history at all, and a device page reads only its own device's (the
``(device_id, ts)`` index), so the other devices' older rows change none of the
measured queries: they would only make the files bigger.

    python bench/bench_pages.py                      # both databases
    python bench/bench_pages.py --databases sqlite --devices 2000 --iterations 50
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from bench.databases import scratch_database
from cloud.accounts.rules import Role
from cloud.accounts.users import create_user
from cloud.app import create_app
from cloud.database import Store
from cloud.devices.rules import DeviceKind
from cloud.devices.tables import DeviceRow, InstallationRow, TokenRow
from cloud.health.tables import (
    CommandRow,
    CommandStatus,
    HealthReportRow,
    HealthStateRow,
    StatusEventRow,
)
from cloud.health.verdicts import VerdictJob, refresh_verdicts
from cloud.settings import CloudSettings
from cloud.testing import AccountsSimulator, PublisherSimulator

INTERVAL = 10
DAY = 86_400
PASSWORD = "bench password, long enough"
_TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _report(device_id: str, kind: str, seq: int, ts: int, *, hot: bool) -> dict[str, Any]:
    wave = (seq % 360) / 360
    specific: dict[str, Any] = {}
    if kind == "camera":
        specific = {"frame_drops": seq // 500, "lens_contrast_pct": 92.0 - wave}
    elif kind == "counter":
        specific = {"open_s_since_last_count": (seq * 10) % 900}
    return {
        "v": 1,
        "device_id": device_id,
        "seq": seq,
        "ts": ts,
        "kind": kind,
        "fw": "2.4.1",
        "uptime_s": 3600 + seq * INTERVAL,
        "reboots": {"count": 3, "last_reason": "power"},
        "cpu_temp_c": (82.0 if hot else 48.0) + 4 * wave,
        "mem_used_pct": 41.0 + 3 * wave,
        "disk": {"used_pct": 63.0 + wave, "write_errors": 0, "reallocated": 0},
        "net": {"rssi_dbm": -61.0 - 5 * wave, "loss_pct": 0.2 * wave},
        "serial": {"crc_errors": seq // 2000, "timeouts": seq // 5000},
        "kind_specific": specific,
        "dropped": 0,
        "errors": {"serial": {}, "cmd": {}, "rejected_tokens": {}},
    }


def _row(report: dict[str, Any], now: int) -> dict[str, Any]:
    return {
        "device_id": report["device_id"],
        "seq": report["seq"],
        "ts": report["ts"],
        "received_at": now,
        "kind": report["kind"],
        "report": report,
        "cpu_temp_c": report["cpu_temp_c"],
        "mem_used_pct": report["mem_used_pct"],
        "disk_used_pct": report["disk"]["used_pct"],
        "loss_pct": report["net"]["loss_pct"],
    }


def generate(store: Store, *, devices: int, deep: int, now: int) -> dict[str, Any]:
    """The fleet described in the module docstring; what was made."""
    kinds = [DeviceKind.GATEWAY, DeviceKind.CAMERA, DeviceKind.COUNTER]
    installations = [f"inst-{i:05d}" for i in range(max(1, devices // 10))]
    ids = [f"dev-{i:05d}" for i in range(devices)]
    kind_of = {d: kinds[i % 3].value for i, d in enumerate(ids)}
    deep_ids = ids[:deep]
    hot = {d for i, d in enumerate(ids) if i % 37 == 5}  # ~2.7% need attention
    raw_rows = 0
    with store.transaction() as tx:
        tx.execute(
            insert(InstallationRow),
            [{"id": i, "name": f"Site {i}", "created_at": now - 90 * DAY} for i in installations],
        )
        tx.execute(
            insert(DeviceRow),
            [
                {
                    "id": d,
                    "installation_id": installations[i // 10 % len(installations)],
                    "kind": DeviceKind(kind_of[d]),
                    "mqtt_password_hash": "x",
                    "created_at": now - 90 * DAY,
                }
                for i, d in enumerate(ids)
            ],
        )
        tx.execute(
            insert(TokenRow),
            [
                {
                    "device_id": d,
                    "ver": 7,
                    "epoch": 0,
                    "cti": secrets.token_bytes(16),
                    "iat": now - DAY,
                    "exp": now + 13 * DAY,
                    "min_until": now + 200 * DAY,
                    "token": secrets.token_bytes(220),
                    "claims": {
                        "iss": "entitle",
                        "sub": d,
                        "aud": "entitle",
                        "iat": now - DAY,
                        "nbf": now - DAY,
                        "exp": now + 13 * DAY,
                        "cti": secrets.token_hex(16),
                        "ver": 7,
                        "epoch": 0,
                        "inst": None,
                        "ent": {"remote_services": {"until": now + 200 * DAY}},
                    },
                    "published_at": now - DAY,
                }
                for d in ids
            ],
        )
    # raw history: 7 days for the measured devices, 10 minutes for the rest
    for d in ids:
        span = 7 * DAY if d in deep_ids else 600
        count = span // INTERVAL
        first_seq = 1_000_000 - count
        batch = []
        for n in range(count):
            seq = first_seq + n + 1
            ts = now - span + (n + 1) * INTERVAL
            batch.append(_row(_report(d, kind_of[d], seq, ts, hot=d in hot), now))
        for start in range(0, len(batch), 20_000):
            with store.transaction() as tx:
                tx.execute(insert(HealthReportRow), batch[start : start + 20_000])
        raw_rows += len(batch)
    with store.transaction() as tx:
        states = []
        events = []
        for i, d in enumerate(ids):
            online = None if i % 100 == 99 else i % 25 != 7
            latest = _report(d, kind_of[d], 1_000_000, now, hot=d in hot)
            states.append(
                {
                    "device_id": d,
                    "latest_seq": 1_000_000,
                    "latest_ts": now,
                    "latest_report": latest,
                    "online": online,
                    "status_at": None if online is None else now - 3 * DAY,
                    "last_seen": now,
                }
            )
            if online is not None:
                events.append({"device_id": d, "online": online, "at": now - 3 * DAY})
        tx.execute(insert(HealthStateRow), states)
        tx.execute(insert(StatusEventRow), events)
    return {
        "devices": devices,
        "installations": len(installations),
        "deep": deep_ids,
        "raw_rows": raw_rows,
        "hot": len(hot),
    }


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """The app's lifespan (migrations, jobs) in its own task, as a server runs it."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(serve())
    await started.wait()
    await app.state.cloud.jobs.first_passes_done.wait()  # on the empty database
    try:
        yield
    finally:
        stop.set()
        await task


class Capture:
    """The SQL statements (with their parameters) the engine ran while ``on``."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        self.statements: list[tuple[str, Any]] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.on and not statement.lstrip().upper().startswith(_TRANSACTION):
            self.statements.append((statement, params))


async def timed(fetch: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        got = await fetch()
        out.append((time.perf_counter() - start) * 1000)
        assert got.status_code == 200, (got.status_code, got.text[:300])
    return out


def replay(engine: Engine, statements: list[tuple[str, Any]], n: int) -> list[float]:
    """Run the captured statements on the bare DBAPI connection, ``n`` times; ms each."""
    raw = engine.raw_connection()
    out = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            cursor = raw.cursor()
            for statement, params in statements:
                if isinstance(params, list):
                    cursor.executemany(statement, params)
                else:
                    cursor.execute(statement, params)
                if cursor.description is not None:
                    cursor.fetchall()
            raw.commit()
            cursor.close()
            out.append((time.perf_counter() - start) * 1000)
    finally:
        raw.close()
    return out


async def sign_in(app: FastAPI, store: Store, now: int) -> httpx.AsyncClient:
    with store.transaction() as tx:
        email = f"bench-{secrets.token_hex(3)}@vendor.example"
        create_user(
            tx,
            email=email,
            name="Bench Admin",
            password=PASSWORD,
            role=Role.ADMIN,
            company_id=None,
            actor="system:bench",
            now=now,
        )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cloud")
    form = await http.get("/login")
    token = _CSRF.search(form.text)
    assert token is not None
    got = await http.post(
        "/login",
        data={"csrf_token": token.group(1), "email": email, "password": PASSWORD, "next": "/"},
    )
    assert got.status_code == 303, got.text[:300]
    return http


async def run(kind: str, *, devices: int, deep: int, n: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    with scratch_database(kind) as url, tempfile.TemporaryDirectory() as tmp:
        settings = CloudSettings(
            data_dir=Path(tmp),
            database_url=url,
            broker_url="mqtt://cloud:secret@127.0.0.1:1",
            health_gap_interval_s=3600,
            health_verdict_interval_s=3600,  # the bench times its own full pass
        )
        app = create_app(settings, publisher=PublisherSimulator(), accounts=AccountsSimulator())
        async with running(app):
            store: Store = app.state.cloud.store
            now = app.state.cloud.clock()
            t0 = time.perf_counter()
            made = generate(store, devices=devices, deep=deep, now=now)
            gen_s = time.perf_counter() - t0
            job = VerdictJob(store, clock=lambda: now, max_batches=10_000)
            t0 = time.perf_counter()
            diagnosed = (await job.run_once()).diagnosed
            verdict_s = time.perf_counter() - t0
            print(
                f"[{kind}] generated in {gen_s:.0f} s: {made['devices']:,} devices in "
                f"{made['installations']:,} installations, one token and one state row each, "
                f"{made['raw_rows']:,} raw reports (7 days at 10 s for {', '.join(made['deep'])}; "
                f"the last 10 minutes for the other {devices - deep:,}), {made['hot']} running hot"
            )
            print(
                f"[{kind}] one full verdict pass (what every fleet request cost before): "
                f"{diagnosed:,} devices in {verdict_s:.1f} s"
            )
            t0 = time.perf_counter()
            with store.transaction() as tx:
                refresh_verdicts(tx, [made["deep"][0]], now=now)
            deep_s = time.perf_counter() - t0
            print(
                f"[{kind}] diagnosing one device with 7 days of 10 s history "
                f"(GET /api/v1/devices/{{id}}/health, 'diagnose now'): {deep_s:.2f} s"
            )
            engine: Engine = store.engine
            capture = Capture(engine)
            http = await sign_in(app, store, now)
            device = made["deep"][0]
            with store.transaction() as tx:  # a pending command, as the page polls it
                tx.add(
                    CommandRow(
                        id="c-bench",
                        device_id=device,
                        cmd="self_test",
                        args={},
                        status=CommandStatus.PENDING,
                        requested_by="user:1",
                        created_at=now,
                        timeout_at=now + 300,
                    )
                )
            pages = {
                "fleet overview, first page (/fleet)": "/fleet",
                "fleet API (/api/v1/health/fleet?limit=100)": "/api/v1/health/fleet?limit=100",
                "installation page (10 controllers)": "/installations/inst-00000",
                "device page (/devices/{id})": f"/devices/{device}",
                "device charts, 24 h (charts.json)": f"/devices/{device}/charts.json?range=24h",
                "device charts, 7 days (charts.json)": f"/devices/{device}/charts.json?range=7d",
                "command result poll (htmx, every 1 s)": f"/devices/{device}/commands/c-bench",
            }
            for label, path in pages.items():
                heavy = "charts" in path or path == f"/devices/{device}"
                count = max(10, n // 4) if heavy else n
                capture.statements.clear()
                capture.on = True
                first = await http.get(path)
                capture.on = False
                if first.status_code != 200:
                    rows.append((kind, label, f"HTTP {first.status_code}: not measured"))
                    continue
                statements = list(capture.statements)
                server = await timed(lambda p=path: http.get(p), count)
                raw = replay(engine, statements, count)
                rows.append(
                    (
                        kind,
                        label,
                        f"p50 {statistics.median(server):7.1f} ms  "
                        f"p99 {percentile(server, 99):7.1f} ms"
                        f"   | raw SQL ({len(statements)} statements) p50 "
                        f"{statistics.median(raw):6.1f} ms  p99 {percentile(raw, 99):6.1f} ms"
                        f"   (n={count})",
                    )
                )
                print(f"[{kind}] {label}: {rows[-1][2]}")
            await http.aclose()
    return rows


async def main(databases: list[str], *, devices: int, deep: int, n: int) -> None:
    print(
        "bench_pages: server time through the ASGI app (no network), sequential requests; "
        "the machine is shared with other work, so read p99 with that in mind"
    )
    results = []
    for kind in databases:
        results += await run(kind, devices=devices, deep=deep, n=n)
    print()
    for kind, label, figures in results:
        print(f"{kind:10} {label:45} {figures}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--deep", type=int, default=3, help="devices with 7 days of raw history")
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.databases, devices=args.devices, deep=args.deep, n=args.iterations))
