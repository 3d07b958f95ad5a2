"""A simulated fleet end to end: real Mosquitto, the real cloud, real agents and emulators."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from agent.outbox import Outbox
from entitle.demo import running_stack
from simulators.fleet import (
    EXPECTED_VERDICT,
    FAULT_KNOBS,
    fleet_diagnoses,
    parse_faults,
    parse_mix,
    plan_fleet,
    register_via_api,
)
from simulators.fleet_run import FleetStats, run_fleet

# --- the plan (pure) ----------------------------------------------------------------


@given(
    devices=st.integers(min_value=0, max_value=400),
    weights=st.dictionaries(
        st.sampled_from(["gateway", "camera", "counter"]),
        st.integers(min_value=0, max_value=100),
        min_size=1,
    ).filter(lambda w: sum(w.values()) > 0),
    fraction=st.floats(min_value=0, max_value=1),
)
def test_plan_splits_by_mix_and_spreads_faults_over_the_kinds_knobs(devices, weights, fraction):
    plans = plan_fleet(devices=devices, mix=weights, fault_fraction=fraction)
    assert len(plans) == devices
    assert len({p.device_id for p in plans}) == devices
    kinds = Counter(p.kind for p in plans)
    whole = sum(weights.values())
    for kind, weight in weights.items():
        assert abs(kinds[kind] - devices * weight / whole) < 1  # largest remainder
    faulty = [p for p in plans if p.fault]
    assert len(faulty) == round(devices * fraction)
    assert all(p.fault in FAULT_KNOBS[p.kind] for p in faulty)
    for kind in kinds:  # round robin: knob counts of one kind differ by at most one
        knobs = Counter(p.fault for p in faulty if p.kind == kind)
        if knobs:
            assert max(knobs.values()) - min(knobs.get(k, 0) for k in FAULT_KNOBS[kind]) <= 1


@given(st.text(max_size=40))
def test_mix_and_fault_parsers_accept_or_raise_value_error(text_in):
    for parse in (parse_mix, parse_faults):
        try:
            parse(text_in)
        except ValueError:
            pass


def test_parsers_read_the_documented_forms():
    assert parse_mix("gateway:60,camera:30,counter:10") == {
        "gateway": 60,
        "camera": 30,
        "counter": 10,
    }
    assert parse_faults("5%") == pytest.approx(0.05)
    assert parse_faults("0.25") == pytest.approx(0.25)
    for bad in ("toaster:1", "gateway:x", "gateway:0"):
        with pytest.raises(ValueError):
            parse_mix(bad)
    with pytest.raises(ValueError):
        parse_faults("150%")


# --- end to end ---------------------------------------------------------------------


def _stored(database_url: str) -> dict[str, tuple[int, int, int]]:
    """Per device: (rows, distinct seqs, highest seq)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT device_id, COUNT(*), COUNT(DISTINCT seq), MAX(seq) "
                    "FROM health_reports GROUP BY device_id"
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def _outboxes(devices: Path) -> dict[str, tuple[int, list[int]]]:
    """Per device: its last seq and the seqs left in its outbox (no PUBACK seen)."""
    found: dict[str, tuple[int, list[int]]] = {}
    for folder in sorted(devices.iterdir()):
        with Outbox(folder / "outbox.db") as outbox:
            found[folder.name] = (outbox.last_seq, [q.seq for q in outbox.pending(100_000)])
    return found


@pytest.mark.usefixtures("require_mosquitto")
async def test_small_fleet_connects_reports_once_and_is_diagnosed(tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    plans = plan_fleet(devices=12, mix={"gateway": 6, "camera": 4, "counter": 2}, fault_fraction=0)
    plans[0] = replace(plans[0], fault="overheating")  # a gateway
    plans[6] = replace(plans[6], fault="noisy_line")  # a camera
    faulty = {p.device_id: p.fault for p in plans if p.fault}
    assert [p.kind for p in (plans[0], plans[6])] == ["gateway", "camera"]

    async with running_stack(devices=0, data_dir=tmp_path, database_url=database_url) as stack:
        logins, keyset, (host, port) = await register_via_api(stack.api, plans)
        finished = False
        fleet = asyncio.create_task(
            run_fleet(
                logins,
                host=host,
                port=port,
                root_keyset=keyset,
                data_dir=tmp_path / "devices",
                interval_s=1.0,
                duration_s=None,
                processes=0,
                ramp_s=0.5,
                should_stop=lambda stats: finished,
            )
        )
        expected = {device: EXPECTED_VERDICT[fault] for device, fault in faulty.items()}
        deadline = time.monotonic() + 120
        attention: dict[str, str] = {}
        while time.monotonic() < deadline and not fleet.done():
            _, attention = await fleet_diagnoses(stack.api)
            if all(attention.get(d) == v for d, v in expected.items()):
                break
            await asyncio.sleep(1)
        finished = True
        stats: FleetStats = await fleet

        assert stats.started == 12
        assert stats.connected == 12  # every device held its own connection to the end
        assert stats.acked >= 12 * 3
        # the cloud commits what the broker acked (ingest acks only after its commit)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = await asyncio.to_thread(_stored, database_url)
            if sum(r[0] for r in stored.values()) >= stats.acked:
                break
            await asyncio.sleep(0.5)
        verdicts, attention = await fleet_diagnoses(stack.api)

    assert set(stored) == {p.device_id for p in plans}
    for rows, distinct, highest in stored.values():
        assert rows == distinct == highest  # seq 1..n, each exactly once
    # Every acked report is stored; besides them the cloud has only reports that were in
    # flight when the fleet stopped: published, stored, their PUBACK never seen (each
    # still in its device's outbox, in order). Counted exactly, not as slack.
    outboxes = _outboxes(tmp_path / "devices")
    acked_total = in_flight = 0
    for device, (_, _, highest) in stored.items():
        last, left = outboxes[device]
        acked = last - len(left)
        assert left == list(range(acked + 1, last + 1))  # the unacked are the newest
        assert acked <= highest <= last, (device, highest, acked, left)
        acked_total += acked
        in_flight += highest - acked
    assert acked_total == stats.acked
    assert sum(len(left) for _, left in outboxes.values()) == stats.queued
    assert sum(rows for rows, _, _ in stored.values()) == stats.acked + in_flight
    for device, verdict in expected.items():
        assert attention.get(device) == verdict, (device, attention)
    healthy = {p.device_id for p in plans if p.fault is None}
    assert not {d for d in healthy if attention.get(d) == "rma_recommended"}
    assert verdicts["rma_recommended"] >= 1
    assert verdicts["fix_remotely"] >= 1


@pytest.mark.usefixtures("require_mosquitto")
@pytest.mark.timeout(210)  # the subprocess' own timeout (180 s) is the hang guard
def test_sim_fleet_command_runs_a_local_fleet_and_prints_the_summary():
    env = dict(os.environ, COLUMNS="120", NO_COLOR="1", TERM="dumb")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "entitle.cli",
            "sim",
            "fleet",
            "--local",
            "--devices",
            "8",
            "--faults",
            "25%",
            "--interval",
            "1",
            "--duration",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "fleet summary" in out
    rows = {
        cells[1].strip(): cells[2].strip()
        for line in out.splitlines()
        if (cells := line.split("│")) and len(cells) == 4
    }
    assert rows["devices"] == "8"
    assert rows["connected (at the end)"] == "8"
    collected, acked, stored = (
        int(rows[name].replace(",", ""))
        for name in (
            "reports collected",
            "reports sent and acked (PUBACK)",
            "reports stored by the cloud",
        )
    )
    # every acked report is stored; a report in flight when the fleet stopped may be
    # stored without its PUBACK having reached the (stopped) agent
    assert 8 <= acked <= stored <= collected
    assert sum(int(v) for k, v in rows.items() if k.startswith("fault injected")) == 2
    assert sum(int(v) for k, v in rows.items() if k.startswith("diagnosis:")) == 8


async def test_only_the_closed_socket_error_of_a_cut_connection_is_dropped():
    import errno

    from agent.session import quiet_closed_sockets

    loop = asyncio.get_running_loop()
    seen: list[object] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context.get("exception")))
    try:

        def fail(error: Exception) -> None:
            raise error

        other = OSError(errno.ECONNRESET, "reset")
        with quiet_closed_sockets(loop):
            loop.call_soon(fail, OSError(errno.EBADF, "Bad file descriptor"))
            loop.call_soon(fail, other)
            await asyncio.sleep(0.01)
        assert seen == [other]
        assert loop.get_exception_handler() is not None  # the test's own, restored
        loop.call_soon(fail, OSError(errno.EBADF, "after the shard"))
        await asyncio.sleep(0.01)
        assert len(seen) == 2
    finally:
        loop.set_exception_handler(None)
