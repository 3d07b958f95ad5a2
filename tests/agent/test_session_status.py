"""The status the agent's session publishes: protocol.status bytes, never one the cloud drops."""

from __future__ import annotations

from agent.session import online_payload
from protocol.status import MAX_STATUS_BYTES, Status, read


def test_online_carries_the_agents_details() -> None:
    details = {"device_id": "gw-1", "token_ver": 3, "rejected": {"expired": 1}}
    assert read(online_payload(details)) == Status(online=True, details=details)


def test_details_the_cloud_would_refuse_are_left_out_not_the_status() -> None:
    too_large = {"last_rejection": "x" * MAX_STATUS_BYTES}
    assert read(online_payload(too_large)) == Status(online=True)
    not_json = {"trusted_time": float("nan")}
    assert read(online_payload(not_json)) == Status(online=True)
