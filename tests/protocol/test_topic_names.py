"""protocol.topics: device ids and topic names, built and parsed in one place."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import TopicError
from protocol.topics import (
    CHANNELS,
    KEYS_TOPIC,
    check_device_id,
    device_topic,
    health_share_subscription,
    parse_device_topic,
)

DEVICE_IDS = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=1,
    max_size=64,
)


@pytest.mark.parametrize("channel", CHANNELS)
def test_build_and_parse(channel: Any) -> None:
    topic = device_topic("gw-0001", channel)
    assert topic == f"entitle/v1/dev/gw-0001/{channel}"
    assert parse_device_topic(topic) == ("gw-0001", channel)


def test_fixed_topics() -> None:
    assert KEYS_TOPIC == "entitle/v1/keys"
    assert health_share_subscription() == "$share/cloud/entitle/v1/dev/+/health"


def test_longest_id_accepted() -> None:
    assert check_device_id("a" * 64) == "a" * 64


BAD_IDS = {
    "slash": "gw/0001",
    "plus": "gw+",
    "hash": "gw#",
    "dollar": "$SYS",
    "empty": "",
    "65-chars": "a" * 65,
    "non-ascii": "gé-01",
    "non-ascii-digit": "gw-٣",
    "fullwidth": "ｇｗ",
    "space": "gw 01",
    "newline": "gw01\n",
    "nul": "gw\x0001",
    "dot": "gw.01",
    "wildcard-only": "+",
}


@pytest.mark.parametrize("device_id", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_bad_device_ids(device_id: str) -> None:
    with pytest.raises(TopicError):
        check_device_id(device_id)
    with pytest.raises(TopicError):
        device_topic(device_id, "entitlement")


@pytest.mark.parametrize("device_id", [None, 1, b"gw-0001"], ids=["none", "int", "bytes"])
def test_non_text_device_id(device_id: Any) -> None:
    with pytest.raises(TopicError):
        check_device_id(device_id)


BAD_TOPICS = [
    "entitle/v1/dev/+/entitlement",
    "entitle/v1/dev/#",
    "entitle/v1/dev/gw-0001/unknown",
    "entitle/v1/dev/gw-0001/entitlement/extra",
    "entitle/v1/dev//entitlement",
    "entitle/v2/dev/gw-0001/entitlement",
    "/entitle/v1/dev/gw-0001/entitlement",
    "entitle/v1/dev/gw-0001",
    "entitle/v1/dev/a/b/health",
    "entitle/v1/dev/gw-0001/cmd/res/x",
    f"entitle/v1/dev/{'a' * 65}/health",
    "entitle/v1/keys",
    "$share/cloud/entitle/v1/dev/+/health",
]


@pytest.mark.parametrize("topic", BAD_TOPICS)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_device_topic(topic)


def test_unknown_channel() -> None:
    with pytest.raises(TopicError):
        device_topic("gw-0001", "firmware")  # type: ignore[arg-type]


@given(DEVICE_IDS, st.sampled_from(CHANNELS))
def test_round_trip(device_id: str, channel: Any) -> None:
    assert parse_device_topic(device_topic(device_id, channel)) == (device_id, channel)


@given(st.text(max_size=80))
def test_any_text_is_a_valid_id_or_a_topic_error(device_id: str) -> None:
    try:
        assert check_device_id(device_id) == device_id
    except TopicError:
        return
    assert (
        device_id.isascii()
        and "/" not in device_id
        and "+" not in device_id
        and "#" not in device_id
    )


@given(st.text(max_size=120))
def test_parse_any_text_raises_only_topic_error(topic: str) -> None:
    try:
        device_id, channel = parse_device_topic(topic)
    except TopicError:
        return
    assert device_topic(device_id, channel) == topic
