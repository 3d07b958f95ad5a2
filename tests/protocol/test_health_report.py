"""protocol.health: the v1 schema, strictly; hypothesis for the parser."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import UntrustedDataError
from protocol.health import (
    ERROR_CATEGORIES,
    KINDS,
    MAX_HEALTH_BYTES,
    BadHealthReport,
    Disk,
    HealthReport,
    Net,
    Reboots,
    SerialCounters,
    health_to_dict,
    health_to_json,
    parse_health,
)
from tests.protocol.test_status_message import json_values
from tests.protocol.test_topic_names import DEVICE_IDS

DEV = "cam-1"


def _report(**changes) -> dict:
    base = HealthReport(
        device_id=DEV,
        seq=7,
        ts=1_800_000_000,
        kind="camera",
        uptime_s=3600,
        fw="2.4.1",
        reboots=Reboots(count=2, last_reason="watchdog"),
        cpu_temp_c=61.5,
        mem_used_pct=40.0,
        disk=Disk(used_pct=80.0, write_errors=0, reallocated=3),
        net=Net(rssi_dbm=-67.0, loss_pct=0.5),
        serial=SerialCounters(crc_errors=1, timeouts=0),
        kind_specific={"frame_drops": 12, "lens": {"dirty": True}},
        dropped=0,
        errors={"serial": {"bad_crc": 1}, "cmd": {}, "rejected_tokens": {"expired": 2}},
    )
    return {**health_to_dict(base), **changes}


def _bytes(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_round_trip():
    data = _bytes(_report())
    report = parse_health(data, topic_device_id=DEV)
    assert report.seq == 7 and report.kind_specific["frame_drops"] == 12
    assert parse_health(health_to_json(report), topic_device_id=DEV) == report


def test_size_is_checked_before_decoding():
    with pytest.raises(BadHealthReport) as info:
        parse_health(b"{" * (MAX_HEALTH_BYTES + 1), topic_device_id=DEV)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b'{"v": 1, "v": 1}', "bad_json"),  # duplicate key
        (b'{"v": NaN}', "bad_json"),
        (b"[1, 2]", "bad_schema"),
        (b"[" * 5000 + b"]" * 5000, "bad_json"),
    ],
)
def test_malformed_json_is_refused(data, reason):
    with pytest.raises(BadHealthReport) as info:
        parse_health(data, topic_device_id=DEV)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"v": 2}, "wrong_version"),
        ({"v": "1"}, "bad_schema"),
        ({"device_id": "cam-2"}, "wrong_device"),
        ({"device_id": "cam/+"}, "bad_schema"),
        ({"seq": 0}, "bad_schema"),
        ({"seq": True}, "bad_schema"),
        ({"seq": 1.5}, "bad_schema"),
        ({"ts": -1}, "bad_schema"),
        ({"kind": "toaster"}, "bad_schema"),
        ({"mem_used_pct": 101}, "bad_schema"),
        ({"cpu_temp_c": "hot"}, "bad_schema"),
        ({"uptime_s": None}, "bad_schema"),
        ({"disk": {"used_pct": 1}}, "bad_schema"),
        ({"net": {"rssi_dbm": 5, "loss_pct": None}}, "bad_schema"),
        ({"serial": {"crc_errors": -1, "timeouts": 0}}, "bad_schema"),
        ({"errors": {"serial": {}, "cmd": {}, "rejected_tokens": {"x": -1}}}, "bad_schema"),
        ({"errors": {"serial": {}, "cmd": {}}}, "bad_schema"),
        ({"extra": 1}, "bad_schema"),
        ({"kind_specific": [1]}, "bad_schema"),
        ({"kind_specific": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, "bad_schema"),
    ],
)
def test_schema_violations_have_typed_reasons(changes, reason):
    with pytest.raises(BadHealthReport) as info:
        parse_health(_bytes(_report(**changes)), topic_device_id=DEV)
    assert info.value.reason == reason
    assert isinstance(info.value, UntrustedDataError)


def test_missing_key_is_refused_and_unknown_keys_pass_only_in_kind_specific():
    for key in _report():
        broken = _report()
        del broken[key]
        with pytest.raises(BadHealthReport):
            parse_health(_bytes(broken), topic_device_id=DEV)
    ok = parse_health(
        _bytes(_report(kind_specific={"anything": [1, "two", None]})), topic_device_id=DEV
    )
    assert ok.kind_specific == {"anything": [1, "two", None]}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=2048))
@settings(max_examples=300)
def test_arbitrary_bytes_either_parse_or_raise_typed(data):
    try:
        parse_health(data, topic_device_id=DEV)
    except BadHealthReport as exc:
        assert exc.reason in {
            "too_large",
            "bad_json",
            "bad_schema",
            "wrong_version",
            "wrong_device",
        }


@given(st.sampled_from(sorted(_report())), _json)
@settings(max_examples=300)
def test_any_field_replaced_by_any_json_parses_or_raises_typed(key, value):
    data = _bytes(_report(**{key: value}))
    try:
        report = parse_health(data, topic_device_id=DEV)
    except BadHealthReport as exc:
        assert exc.reason in {
            "too_large",
            "bad_json",
            "bad_schema",
            "wrong_version",
            "wrong_device",
        }
    else:
        # whatever was accepted re-encodes to something accepted again
        assert parse_health(health_to_json(report), topic_device_id=DEV) == report


_INT = st.integers(min_value=0, max_value=2**63 - 1)


def _maybe(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | values


def _names(max_size: int) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=max_size)


REPORTS = st.builds(
    HealthReport,
    device_id=DEVICE_IDS,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    ts=_INT,
    kind=st.sampled_from(KINDS),
    uptime_s=_INT,
    fw=_maybe(_names(64)),
    reboots=st.builds(Reboots, count=_maybe(_INT), last_reason=_maybe(_names(64))),
    cpu_temp_c=_maybe(st.floats(-100, 200)),
    mem_used_pct=_maybe(st.floats(0, 100)),
    disk=st.builds(
        Disk,
        used_pct=_maybe(st.floats(0, 100)),
        write_errors=_maybe(_INT),
        reallocated=_maybe(_INT),
    ),
    net=st.builds(Net, rssi_dbm=_maybe(st.floats(-200, 0)), loss_pct=_maybe(st.floats(0, 100))),
    serial=st.builds(SerialCounters, crc_errors=_INT, timeouts=_INT),
    kind_specific=st.dictionaries(st.text(max_size=8), json_values(3), max_size=4),
    dropped=_INT,
    errors=st.fixed_dictionaries(
        {c: st.dictionaries(_names(16), _INT, max_size=3) for c in ERROR_CATEGORIES}
    ),
)
"""Any report the schema accepts, as the typed value (the agent's and the cloud's)."""


@given(REPORTS)
def test_the_typed_report_round_trips_through_its_bytes(report: HealthReport) -> None:
    data = health_to_json(report)
    assert len(data) <= MAX_HEALTH_BYTES
    assert parse_health(data, topic_device_id=report.device_id) == report
    assert health_to_json(parse_health(data, topic_device_id=report.device_id)) == data
