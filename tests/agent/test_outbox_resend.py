"""The outbox keeps sent reports for ``resend_health``: kept, pruned, re-queued in order."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.commands import CommandHandler
from agent.outbox import Outbox, Resent
from protocol.commands import parse_command_result, result_to_json
from tests.agent.test_commands import _cmd
from tests.agent.test_outbox import report


def _send_all(box: Outbox, *, now: int) -> list[int]:
    seqs = [q.seq for q in box.pending(1000)]
    box.mark_sent(seqs, now=now)
    return seqs


def test_sent_reports_are_kept_not_pending_and_survive_a_restart(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        for i in range(3):
            box.append(report(i))
        assert box.mark_sent([1, 2], now=100) == 2
        assert box.mark_sent([1, 2], now=100) == 0  # already sent
        assert [q.seq for q in box.pending()] == [3]
        assert len(box) == 1 and box.kept_sent == 2
    with Outbox(tmp_path / "o.db") as box:
        assert box.stats() == {"queued": 1, "kept_sent": 2, "last_seq": 3, "dropped_total": 0}


def test_sent_reports_are_pruned_by_count_and_by_age(tmp_path):
    with Outbox(tmp_path / "o.db", keep_sent=3, keep_sent_s=1000) as box:
        for _ in range(5):
            box.append(report())
        box.mark_sent([1, 2, 3, 4, 5], now=100)
        assert box.kept_sent == 3  # the newest three: 3, 4, 5
        assert box.resend(1, 5) == Resent(requeued=3, already_queued=0, not_held=((1, 2),))
        box.mark_sent([3, 4, 5], now=100)
        box.append(report())
        box.mark_sent([6], now=1101)  # 3, 4 and 5 were sent more than 1000 s before
        assert box.kept_sent == 1
        assert box.resend(1, 6).not_held == ((1, 5),)


def test_resend_requeues_in_seq_order_before_newer_reports(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        for i in range(6):
            box.append(report(i))
        _send_all(box, now=10)
        box.append(report(6))  # seq 7, never sent
        done = box.resend(2, 4)
        assert done == Resent(requeued=3, already_queued=0, not_held=())
        assert [q.seq for q in box.pending()] == [2, 3, 4, 7]
        assert [q.report["uptime_s"] for q in box.pending()] == [
            1,
            2,
            3,
            6,
        ]  # the very same reports
        assert box.resend(3, 9) == Resent(requeued=2, already_queued=3, not_held=((8, 9),))


def test_unsent_reports_are_never_evicted_by_sent_ones(tmp_path):
    with Outbox(tmp_path / "o.db", max_rows=3, keep_sent=100) as box:
        for _ in range(50):
            box.append(report())
        _send_all(box, now=1)  # 48, 49, 50 (the others were dropped while full)
        for _ in range(3):
            box.append(report())
        assert [q.seq for q in box.pending()] == [51, 52, 53]
        assert [q.report["dropped"] for q in box.pending()] == [0, 0, 0]
        assert box.kept_sent == 3


@given(
    max_rows=st.integers(1, 6),
    keep_sent=st.integers(0, 6),
    keep_sent_s=st.integers(0, 20),
    steps=st.lists(st.tuples(st.sampled_from("asrdo"), st.integers(1, 30)), max_size=40),
)
# found by this test: resend re-queued every kept report, past the unsent bound
@example(
    max_rows=2,
    keep_sent=6,
    keep_sent_s=20,
    steps=[("a", 1), ("a", 1), ("s", 1), ("a", 1), ("r", 1)],
)
@settings(max_examples=60, deadline=None)
def test_kept_and_unsent_stay_within_their_own_bounds(max_rows, keep_sent, keep_sent_s, steps):
    def open_box(folder: str) -> Outbox:
        return Outbox(
            Path(folder) / "o.db", max_rows=max_rows, keep_sent=keep_sent, keep_sent_s=keep_sent_s
        )

    with tempfile.TemporaryDirectory() as tmp:
        box = open_box(tmp)
        try:
            clock = 0
            for op, n in steps:
                if op == "a":
                    box.append(report())
                elif op == "s":
                    clock += n  # acks come in time order, some long after the last
                    _send_all(box, now=clock)
                elif op == "r":
                    box.resend(n, n + 5)
                elif op == "d":
                    box.delete([n])
                else:  # the agent restarts
                    box.close()
                    box = open_box(tmp)
                assert len(box) <= max_rows
                assert box.kept_sent <= keep_sent
                # the count an ack prunes by is the count of sent rows on disk
                assert box._kept == box.kept_sent
                pending = [q.seq for q in box.pending(1000)]
                assert pending == sorted(pending)
        finally:
            box.close()


async def test_resend_health_command_round_trip_on_the_handler(tmp_path):
    with Outbox(tmp_path / "o.db") as box:
        for _ in range(4):
            box.append(report())
        _send_all(box, now=1)

        def resend(first: int, last: int) -> dict:
            done = box.resend(first, last)
            return {"requeued": done.requeued, "not_held": [list(r) for r in done.not_held]}

        handler = CommandHandler(
            device_id="gw-r", firmware=None, publisher=None, resend_health=resend
        )
        payload = _cmd(id="r1", cmd="resend_health", args={"from_seq": 3, "to_seq": 6})
        result = await handler.handle(payload)
        parsed = parse_command_result(result_to_json(result), topic_device_id="gw-r")
        assert parsed.ok and parsed.result == {"requeued": 2, "not_held": [[5, 6]]}
        assert [q.seq for q in box.pending()] == [3, 4]
        assert handler.handled == 1 and handler.errors == {}
        too_wide = _cmd(id="r2", cmd="resend_health", args={"from_seq": 1, "to_seq": 1001})
        refused = await handler.handle(too_wide)
        assert not refused.ok and refused.error_reason == "bad_schema"
        bare = CommandHandler(device_id="gw-r", firmware=None, publisher=None)
        nothing = await bare.handle(payload)
        assert not nothing.ok and nothing.error_reason == "no_outbox"
        assert handler.errors == {"bad_schema": 1} and bare.errors == {"no_outbox": 1}


def test_resend_queues_only_what_the_unsent_bound_has_room_for(tmp_path):
    with Outbox(tmp_path / "o.db", max_rows=2, keep_sent=10) as box:
        for _ in range(2):
            box.append(report())
        _send_all(box, now=1)
        box.append(report())  # seq 3 unsent: room for one more
        done = box.resend(1, 2)
        assert (done.requeued, done.already_queued, done.not_held) == (1, 0, ())
        assert [q.seq for q in box.pending()] == [1, 3] and len(box) == 2
        assert box.kept_sent == 1  # 2 stays kept: asked again later, it goes out then
