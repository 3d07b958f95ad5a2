"""The ingest's lean parse (cloud.health.rows) against protocol.health.parse_health.

For any bytes, ``parse_row`` either returns the row that ``report_row(parse_health(...))``
would store, or raises ``BadHealthReport`` with the same reason: the lean path is
exactly as strict as the typed one.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.health.queries import report_row
from cloud.health.rows import encode_report, parse_row
from protocol.health import BadHealthReport, HealthReport, health_to_json, parse_health
from tests.protocol.test_health_report import REPORTS, _json, _report

DEVICE = "gw-1"


def _same(data: bytes, topic_device_id: str = DEVICE) -> None:
    try:
        typed = parse_health(data, topic_device_id=topic_device_id)
    except BadHealthReport as exc:
        with pytest.raises(BadHealthReport) as lean:
            parse_row(data, topic_device_id=topic_device_id)
        assert lean.value.reason == exc.reason, (data[:200], exc, lean.value)
        return
    row = parse_row(data, topic_device_id=topic_device_id)
    expected = report_row(typed, received_at=0)
    got = {
        "device_id": row.device_id,
        "seq": row.seq,
        "ts": row.ts,
        "received_at": 0,
        "kind": row.kind,
        "report": row.report,
        "cpu_temp_c": row.cpu_temp_c,
        "mem_used_pct": row.mem_used_pct,
        "disk_used_pct": row.disk_used_pct,
        "loss_pct": row.loss_pct,
    }
    assert got == expected
    assert json.loads(encode_report(row.report)) == expected["report"]


@given(REPORTS)
def test_every_valid_report_gives_the_same_row(report: HealthReport) -> None:
    _same(health_to_json(report, max_bytes=None), report.device_id)


@given(st.binary(max_size=2048))
@settings(max_examples=300)
def test_arbitrary_bytes_are_refused_for_the_same_reason(data: bytes) -> None:
    _same(data)


_KEYS = sorted(_report())
_PATHS = [(k,) for k in _KEYS] + [
    (outer, inner)
    for outer in ("reboots", "disk", "net", "serial", "errors")
    for inner in _report()[outer]
]


# each range's edges and just past them, in every field
_EDGES = [-200.5, -200, -100.5, -100, -1, -0.0, 0, 0.5, 1, 100, 100.5, 200, 200.5, 2**63 - 1, 2**63]


def _replaced(path: tuple[str, ...], value: object) -> bytes:
    obj = _report(device_id=DEVICE)
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize("path", _PATHS)
def test_every_field_at_its_edges_gives_the_same_outcome(path: tuple[str, ...]) -> None:
    for value in [*_EDGES, None, True, "x", [], {}]:
        _same(_replaced(path, value))


@given(st.sampled_from(_PATHS), _json | st.integers(min_value=-(2**70), max_value=2**70))
@settings(max_examples=1500)
def test_any_field_replaced_by_any_value_gives_the_same_outcome(
    path: tuple[str, ...], value: object
) -> None:
    _same(_replaced(path, value))


@given(st.sampled_from(_PATHS), st.booleans())
def test_a_missing_or_unknown_key_gives_the_same_outcome(path: tuple[str, ...], add: bool) -> None:
    obj = _report(device_id=DEVICE)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if add:
        target["extra"] = 1
    else:
        del target[path[-1]]
    _same(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "data",
    [
        b'{"v":1,"v":1}',
        b"[1]",
        b'{"v":NaN}',
        b"\xff\xfe{}",
        b'{"v":2,"device_id":"x"}',
        b'{"v":true}',
        b'{"v":1,"device_id":"gw-2"}',
        b'{"v":1,"device_id":"../x"}',
        b"x" * 20_000,
    ],
)
def test_known_refusals(data: bytes) -> None:
    _same(data)


def test_a_huge_integer_figure_is_a_typed_refusal() -> None:
    obj = _report(device_id=DEVICE, cpu_temp_c=10**400)
    with pytest.raises(BadHealthReport) as refused:
        parse_row(json.dumps(obj).encode(), topic_device_id=DEVICE)
    assert refused.value.reason == "bad_schema"
