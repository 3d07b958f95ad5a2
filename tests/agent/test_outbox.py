"""The health outbox: bounded, seq never reused, drops counted, survives restarts and kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.outbox import Outbox
from protocol.health import HealthReport, parse_health
from tests.protocol.test_health_report import REPORTS


def report(n: int = 0) -> HealthReport:
    """A report for the outbox to number, told apart by its ``uptime_s``."""
    return HealthReport(device_id="gw-1", seq=0, ts=1_800_000_000, kind="gateway", uptime_s=n)


def test_seq_is_assigned_in_order_and_persisted(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        assert [box.append(report(i)) for i in range(3)] == [1, 2, 3]
        assert [q.report["uptime_s"] for q in box.pending()] == [0, 1, 2]
        assert [q.report["seq"] for q in box.pending()] == [1, 2, 3]
        assert box.delete([1, 2, 3]) == 3
    with Outbox(tmp_path / "o.db") as box:
        assert len(box) == 0
        assert box.append(report()) == 4  # never reused, even when everything was acknowledged


def test_full_outbox_drops_oldest_and_counts_them_in_the_next_report(tmp_path):
    with Outbox(tmp_path / "o.db", max_rows=3) as box:
        for i in range(5):
            box.append(report(i))
        queued = box.pending()
        assert [q.seq for q in queued] == [3, 4, 5]
        assert [q.report["dropped"] for q in queued] == [0, 1, 1]
        assert box.dropped_total == 2
        # a dropped report's own "dropped" moves on to the report that drops it
        box.append(report(5))
        assert [(q.seq, q.report["dropped"]) for q in box.pending()] == [(4, 1), (5, 1), (6, 1)]
        box.append(report(6))  # drops seq 4, which carried 1
        assert [(q.seq, q.report["dropped"]) for q in box.pending()] == [(5, 1), (6, 1), (7, 2)]


@given(st.integers(min_value=1, max_value=5), st.lists(st.booleans(), max_size=40))
@settings(max_examples=30, deadline=None)
def test_received_dropped_fields_add_up_to_the_missing_reports(max_rows, deliver_now):
    """Whatever the cloud receives, sum(dropped) == reports it will never see."""
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp) / "o.db", max_rows=max_rows) as box:
        received: list[dict] = []
        for deliver in deliver_now:
            box.append(report())
            if deliver:
                queued = box.pending(1000)
                received += [q.report for q in queued]
                box.delete(q.seq for q in queued)
        received += [q.report for q in box.pending(1000)]
        missing = box.last_seq - len(received)
        assert sum(r["dropped"] for r in received) == missing == box.dropped_total


class OutboxMachine(RuleBasedStateMachine):
    """append / ack / restart / overflow against a model of what must be stored."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "outbox.db"
        self.max_rows = 4
        self.box = Outbox(self.path, max_rows=self.max_rows)
        self.model: dict[int, dict] = {}  # seq -> payload marker
        self.last_seq = 0
        self.dropped = 0

    @rule(marker=st.integers(0, 1000))
    def append(self, marker):
        seq = self.box.append(report(marker))
        assert seq == self.last_seq + 1
        self.last_seq = seq
        self.model[seq] = {"marker": marker}
        while len(self.model) > self.max_rows:
            del self.model[min(self.model)]
            self.dropped += 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def ack_some(self, data):
        pending = [q.seq for q in self.box.pending(1000)]
        chosen = data.draw(st.lists(st.sampled_from(pending), unique=True))
        assert self.box.delete(chosen) == len(chosen)
        for seq in chosen:
            del self.model[seq]

    @rule()
    def ack_unknown(self):
        assert self.box.delete([self.last_seq + 10, -1]) == 0

    @rule()
    def restart(self):
        self.box.close()
        self.box = Outbox(self.path, max_rows=self.max_rows)

    @invariant()
    def stored_matches_model(self):
        queued = self.box.pending(1000)
        assert [q.seq for q in queued] == sorted(self.model)
        assert all(q.report["uptime_s"] == self.model[q.seq]["marker"] for q in queued)
        assert all(q.report["seq"] == q.seq for q in queued)
        assert self.box.last_seq == self.last_seq
        assert self.box.dropped_total == self.dropped

    def teardown(self) -> None:
        self.box.close()
        self._dir.cleanup()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.outbox import Outbox
    from protocol.health import HealthReport
    def report(n):
        return HealthReport(device_id="gw-1", seq=0, ts=0, kind="gateway", uptime_s=n)
    box = Outbox(Path(sys.argv[1]), max_rows=50)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        box.append(report(n))
        if n % 7 == 0:
            box.delete([q.seq for q in box.pending(3)])
    """
)


@pytest.mark.parametrize("run_ms", [50, 200])
def test_kill_9_mid_write_leaves_a_consistent_outbox(tmp_path, run_ms):
    """SIGKILL at an arbitrary point: every stored report is whole, seq continues upward."""
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        proc.wait(run_ms / 1000)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with Outbox(path, max_rows=50) as box:
        queued = box.pending(1000)
        assert len(queued) <= 50
        assert all(q.report["seq"] == q.seq and q.report["uptime_s"] == q.seq for q in queued)
        assert [q.seq for q in queued] == sorted(q.seq for q in queued)
        last = box.last_seq
        assert last >= max((q.seq for q in queued), default=0)
        assert box.append(report(-1)) == last + 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@given(st.lists(REPORTS, min_size=1, max_size=5))
@settings(max_examples=30, deadline=None)
def test_the_stored_bytes_are_the_report_numbered_by_the_outbox(reports):
    """What the publisher sends parses back to the very report appended, with its seq."""
    with tempfile.TemporaryDirectory() as tmp, Outbox(Path(tmp) / "o.db", max_rows=3) as box:
        seqs = [box.append(r) for r in reports]
        for q in box.pending():
            built = reports[seqs.index(q.seq)]
            got = parse_health(q.body, topic_device_id=built.device_id)
            assert got == replace(built, seq=q.seq, dropped=q.report["dropped"])
