"""One device-id rule: the HTTP schemas accept exactly the ids protocol.topics accepts."""

from __future__ import annotations

from typing import Annotated

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from cloud.devices.schemas import DeviceCreate
from cloud.http.schemas import DEVICE_ID_PATTERN
from protocol.errors import TopicError
from protocol.topics import check_device_id
from tests.protocol.test_topic_names import BAD_IDS, DEVICE_IDS

_HTTP_DEVICE_ID = TypeAdapter(Annotated[str, Field(pattern=DEVICE_ID_PATTERN)])


def _protocol_accepts(device_id: str) -> bool:
    try:
        check_device_id(device_id)
    except TopicError:
        return False
    return True


def _http_accepts(device_id: str) -> bool:
    try:
        _HTTP_DEVICE_ID.validate_python(device_id)
    except ValidationError:
        return False
    return True


@given(st.text(max_size=80) | DEVICE_IDS)
@example("a" * 64)
@example("a" * 65)
@example("gw01\n")
def test_the_http_pattern_is_the_protocol_rule(device_id: str) -> None:
    assert _http_accepts(device_id) == _protocol_accepts(device_id)


@pytest.mark.parametrize("device_id", BAD_IDS.values(), ids=BAD_IDS.keys())
def test_a_device_body_refuses_what_a_topic_would(device_id: str) -> None:
    with pytest.raises(ValidationError):
        DeviceCreate(installation_id="inst-1", kind="gateway", device_id=device_id)


def test_a_device_body_takes_a_good_id() -> None:
    body = DeviceCreate(installation_id="inst-1", kind="gateway", device_id="gw-0001")
    assert body.device_id == "gw-0001"
