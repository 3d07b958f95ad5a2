"""protocol.status: the retained online/offline message, written by the agent, read by the cloud."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protocol.errors import UntrustedDataError
from protocol.status import MAX_STATUS_BYTES, OFFLINE, BadStatus, Status, read, write


def json_values(depth: int) -> st.SearchStrategy[Any]:
    """JSON values nested at most ``depth`` containers deep."""
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12)
    )
    if depth == 0:
        return leaves
    inner = json_values(depth - 1)
    return (
        leaves
        | st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
    )


DETAILS = st.dictionaries(
    st.text(min_size=1, max_size=16).filter(lambda key: key != "status"),
    json_values(3),
    max_size=6,
)
STATUSES = st.builds(Status, online=st.booleans(), details=DETAILS)


@given(STATUSES)
@example(Status(online=True, details={"device_id": "gw-1", "rejected": {"expired": 2}}))
@example(OFFLINE)
def test_round_trip(status: Status) -> None:
    data = write(status)
    assert len(data) <= MAX_STATUS_BYTES
    assert read(data) == status
    assert write(read(data)) == data


def test_the_bytes_the_agent_always_published() -> None:
    """The will and a status with details, byte for byte as before the message had a type."""
    assert write(OFFLINE) == b'{"status": "offline"}'
    details = {"device_id": "gw-1", "token_ver": 3, "stale_token": False, "last_rejection": None}
    assert (
        write(Status(online=True, details=details))
        == json.dumps({"status": "online", **details}).encode()
    )


def test_the_cloud_reads_only_the_word_and_keeps_the_details() -> None:
    got = read(b'{"status": "online", "device_id": "gw-1", "outbox": {"queued": 3}}')
    assert got.online is True
    assert got.details == {"device_id": "gw-1", "outbox": {"queued": 3}}
    assert read(b'{"status":"offline"}') == OFFLINE


def test_size_is_checked_before_decoding() -> None:
    with pytest.raises(BadStatus) as caught:
        read(b"{" * (MAX_STATUS_BYTES + 1))
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b'{"status": "online", "status": "offline"}', "bad_json"),  # duplicate key
        (b'{"status": "online", "t": NaN}', "bad_json"),
        (b'["online"]', "bad_schema"),
        (b'"online"', "bad_schema"),
        (b"{}", "bad_schema"),
        (b'{"status": "sleepy"}', "bad_schema"),
        (b'{"status": true}', "bad_schema"),
        (b'{"status": null}', "bad_schema"),
        (b'{"status": "online", "deep": ' + b"[" * 12 + b"]" * 12 + b"}", "bad_schema"),
    ],
)
def test_refusals_are_typed(payload: bytes, reason: str) -> None:
    with pytest.raises(BadStatus) as caught:
        read(payload)
    assert caught.value.reason == reason
    assert isinstance(caught.value, UntrustedDataError)


def test_write_refuses_what_read_would() -> None:
    with pytest.raises(BadStatus) as caught:
        write(Status(online=True, details={"status": "offline"}))
    assert caught.value.reason == "bad_schema"
    with pytest.raises(BadStatus) as caught:
        write(Status(online=True, details={"padding": "x" * MAX_STATUS_BYTES}))
    assert caught.value.reason == "too_large"
    with pytest.raises(BadStatus) as caught:
        write(Status(online=True, details={"t": float("nan")}))
    assert caught.value.reason == "bad_schema"
    with pytest.raises(BadStatus) as caught:
        write(Status(online=True, details={"when": object()}))
    assert caught.value.reason == "bad_schema"


@given(st.binary(max_size=64))
@example(b'{"status":"online"}')
def test_any_bytes_give_a_status_or_bad_status(data: bytes) -> None:
    try:
        status = read(data)
    except BadStatus as exc:
        assert exc.reason in {"too_large", "bad_json", "bad_schema"}
    else:
        assert isinstance(status.online, bool)
        assert read(write(status)) == status


@given(STATUSES.map(write), st.data())
def test_a_corrupted_status_is_read_or_refused(data: bytes, draw: st.DataObject) -> None:
    """One byte changed anywhere: a status that writes back the same, or BadStatus."""
    at = draw.draw(st.integers(0, len(data) - 1))
    byte = draw.draw(st.integers(0, 255))
    corrupted = data[:at] + bytes([byte]) + data[at + 1 :]
    try:
        status = read(corrupted)
    except BadStatus as exc:
        assert exc.reason in {"bad_json", "bad_schema"}
    else:
        assert read(write(status)) == status
