"""Must show 3 at a small scale: a broker restart under a fleet of light devices.

200 devices (:class:`simulators.storm.StormDevice`: the agent's MQTT session and
verifier, the agent's health publisher) each get a first token from the running
cloud's re-sign job, enforce it and report health every second. Mosquitto
(persistence on) is restarted; or, on a 3-node NATS cluster with the devices
spread over the nodes, one node is killed -9 and started again. Every device cut
off must connect again, receive its retained token again (on NATS, or the
current token the cloud sends to a device that connects, since a restarted
node may replay none), verify it and enforce the right decisions; once the
devices stop building reports, every queue must empty and every PUBACKed report
be stored exactly once (reports Mosquitto PUBACKed and dropped while no worker's
``$share`` subscription existed come back through the cloud's gap repair,
``resend_health``, as with real agents). Awaited
throughout; the ceilings only catch a hang. The large version with figures is
``bench/bench_storm.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from simulators.fleet import plan_fleet
from simulators.fleet_run import LocalCloud, stored_reports
from simulators.storm import (
    StormControl,
    StormJob,
    StormStats,
    losses,
    run_storm_shard,
    seed_storm,
    stored_by_device,
)
from tests.waiting import eventually

DEVICES = 200
SLOW = 180.0  # a hang, not a figure: 200 devices and a cloud on a loaded 2-core machine


KILLED = 1  # the NATS node killed -9: the cloud's MQTT connection is on the first one


@pytest.mark.usefixtures("require_mosquitto")
@pytest.mark.timeout(SLOW * 3)
@pytest.mark.parametrize("engine", ["mosquitto", "nats"])
async def test_every_device_reenforces_and_no_report_is_lost(tmp_path: Path, engine: str) -> None:
    plans = plan_fleet(
        devices=DEVICES,
        mix={"gateway": 6, "camera": 3, "counter": 1},
        fault_fraction=0.0,
        prefix="storm",
    )
    # the gap repair asks devices again for what Mosquitto dropped (see simulators.storm)
    repair = {"ENTITLE_HEALTH_GAP_INTERVAL_S": "1", "ENTITLE_HEALTH_GAP_GRACE_S": "2"}
    with LocalCloud(tmp_path, plans, persistence=True, env=repair, engine=engine) as cloud:
        expected = seed_storm(cloud.database_url, now=int(time.time()))
        flags = {"mark": 0.0, "reporting": True, "stop": False}
        control = StormControl(
            mark=lambda: float(flags["mark"]),
            reporting=lambda: bool(flags["reporting"]),
            stop=lambda: bool(flags["stop"]),
        )
        seen: list[StormStats] = []
        job = StormJob(
            shard=0,
            logins=cloud.logins,
            expected=expected,
            host=cloud.host,
            port=cloud.port,
            root_keyset=cloud.root_keyset,
            interval_s=1.0,
            # NATS makes each MQTT session's JetStream state at its first login, and a
            # burst of first logins times out: a fleet's devices do not all boot at once
            ramp_s=20.0 if engine == "nats" else 2.0,
            protocol=cloud.protocol,
            fallbacks=cloud.fallbacks,  # on NATS each device starts on node index % 3
        )
        shard = asyncio.create_task(run_storm_shard(job, control, seen.append))
        try:

            def now() -> StormStats | None:
                return seen[-1] if seen else None

            def shown() -> object:
                return now()

            # every device got its first token from the cloud, verified and enforced it
            await eventually(
                lambda: (s := now()) is not None and s.enforced == DEVICES, what=shown, within=SLOW
            )
            # reports flow and some are stored before the restart
            await eventually(lambda: stored_reports(cloud.database_url) > 0, within=SLOW)
            before = now()
            assert before is not None and before.wrong == 0 and before.rejected == 0

            flags["mark"] = time.monotonic()
            if engine == "nats":  # a crashed node, started again: its devices fail over
                cloud.broker.kill_node(KILLED)
                cloud.broker.start_node(KILLED)
                least = 1
            else:
                cloud.broker.restart()  # SIGTERM (persistence saved), same port and files
                least = DEVICES

            def back(s: StormStats | None) -> bool:
                """Every device connected, and each one cut off re-enforced since its
                last connect (a device not cut off may re-enforce too: a redelivery)."""
                return (
                    s is not None
                    and s.connected == DEVICES
                    and s.reconnected >= least
                    and s.waiting == 0
                )

            await eventually(lambda: back(now()), what=shown, within=SLOW)
            # reports built after the restart are acknowledged too
            await eventually(
                lambda: (s := now()) is not None and s.acked > before.collected + DEVICES,
                what=shown,
                within=SLOW,
            )
            flags["reporting"] = False
            await eventually(lambda: (s := now()) is not None and s.queued == 0, what=shown)
            acked = now().acked  # type: ignore[union-attr]
            await eventually(
                lambda: stored_reports(cloud.database_url) >= acked,
                what=lambda: f"{stored_reports(cloud.database_url)} of {acked} stored",
                within=SLOW,
            )
        finally:
            flags["stop"] = True
            final = await shard
        stored = stored_by_device(cloud.database_url)

    assert final.done and len(final.results) == DEVICES
    # every device the restart cut off connected again and re-enforced its retained token
    cut_off = {r.device_id for r in final.results if r.connects and r.connects[-1] >= flags["mark"]}
    assert len(cut_off) >= least
    for result in final.results:
        if result.device_id in cut_off:
            assert result.enforced and result.enforced[-1] >= flags["mark"], result.device_id
        assert result.enforced, result.device_id
        assert result.wrong == 0 and not result.rejected, result
        assert result.queued == 0 and len(result.acked_seqs) == result.collected
    assert losses(final.results, stored) == {"lost": 0, "duplicates": 0, "stored_not_acked": 0}
    assert sum(len(v) for v in stored.values()) == final.acked
