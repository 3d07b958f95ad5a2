"""Remote commands: the protocol schema, and the agent's handler over a real firmware link.

The firmware is an emulator from ``firmware_stubs`` behind ``InProcessLink``
(the same codec and client as the serial port) or a real pty.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.commands import UNKNOWN_ID, CommandHandler
from agent.firmware import FirmwareClient, InProcessLink, SerialLink
from agent.runtime import open_agent
from common.tasks import cancel_and_wait
from firmware_stubs import Faults, GatewayEmulator, PtyFirmware
from protocol.commands import (
    BadCommand,
    Command,
    command_to_json,
    error_result,
    ok_result,
    parse_command,
    parse_command_result,
    result_to_json,
)
from simulators import TokenRepositorySimulator
from tests.waiting import HANG_S

DEV = "gw-cmd"


def _cmd(**fields) -> bytes:
    return json.dumps({"v": 1, "id": "c-1", "cmd": "self_test", "args": {}, **fields}).encode()


# --- protocol ---------------------------------------------------------------------------
def test_command_round_trip():
    command = Command(id="r.2:x-y_z", cmd="fetch_log", args={"max_bytes": 100})
    assert parse_command(command_to_json(command)) == command


@pytest.mark.parametrize(
    ("data", "reason", "command_id"),
    [
        (b"x" * 5000, "too_large", None),
        (b"{", "bad_json", None),
        (b'{"id": "a", "id": "b"}', "bad_json", None),
        (_cmd(v=2), "wrong_version", "c-1"),
        (_cmd(cmd="format_disk"), "unknown_command", "c-1"),
        (_cmd(cmd=7), "bad_schema", "c-1"),
        (_cmd(args={"max_bytes": 5}), "bad_schema", "c-1"),  # self_test takes no args
        (_cmd(cmd="fetch_log", args={"max_bytes": 0}), "bad_schema", "c-1"),
        (_cmd(id="has space"), "bad_schema", None),
        (_cmd(id="x" * 65), "bad_schema", None),
        (_cmd(extra=1), "bad_schema", "c-1"),
        (json.dumps({"v": 1, "id": "c-1", "cmd": "reboot"}).encode(), "bad_schema", "c-1"),
    ],
)
def test_bad_commands_are_typed_and_keep_a_readable_id(data, reason, command_id):
    with pytest.raises(BadCommand) as info:
        parse_command(data)
    assert info.value.reason == reason
    assert info.value.command_id == command_id


def test_results_round_trip_and_are_bound_to_the_topic_device():
    ok = ok_result("c-1", device_id=DEV, result={"passed": True, "faults": []})
    err = error_result("c-2", device_id=DEV, reason="firmware_unavailable", detail="no answer")
    for result in (ok, err):
        assert parse_command_result(result_to_json(result), topic_device_id=DEV) == result
    with pytest.raises(BadCommand) as info:
        parse_command_result(result_to_json(ok), topic_device_id="someone-else")
    assert info.value.reason == "wrong_device" and info.value.command_id == "c-1"


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_command_parser_on_arbitrary_bytes(data):
    try:
        parse_command(data)
    except BadCommand as exc:
        assert exc.reason in {
            "too_large",
            "bad_json",
            "bad_schema",
            "wrong_version",
            "unknown_command",
        }


# --- the agent's handler ------------------------------------------------------------------
def _handler(emulator=None, **kwargs) -> CommandHandler:
    firmware = FirmwareClient(InProcessLink(emulator or GatewayEmulator()), timeout_s=0.2)
    return CommandHandler(device_id=DEV, firmware=firmware, publisher=None, **kwargs)


async def test_self_test_fetch_log_and_reboot_run_on_the_firmware():
    emulator = GatewayEmulator(faults=Faults(overheating=True))
    rebooted = []
    handler = _handler(emulator, on_reboot=lambda: rebooted.append(True))
    result = await handler.handle(_cmd(id="t1"))
    assert result.ok and result.id == "t1"
    assert result.result["hardware_fault"] is True
    assert result.result["faults"][0]["code"] == "fan_failure"

    log = await handler.handle(_cmd(id="t2", cmd="fetch_log", args={"max_bytes": 2000}))
    assert log.ok and "boot:" in log.result["log"]

    before = emulator.reboots
    reboot = await handler.handle(_cmd(id="t3", cmd="reboot"))
    assert reboot.ok and emulator.reboots == before + 1 and rebooted == [True]
    assert handler.errors == {}
    # each result is what the cloud will parse
    for r in (result, log, reboot):
        assert parse_command_result(result_to_json(r), topic_device_id=DEV).ok


async def test_silent_firmware_gives_a_typed_error_result_and_is_counted():
    handler = _handler(GatewayEmulator(faults=Faults(silent=True)))
    result = await handler.handle(_cmd(id="t9"))
    assert not result.ok and result.id == "t9"
    assert result.error_reason == "firmware_unavailable"
    assert handler.errors == {"firmware_unavailable": 1}


async def test_no_firmware_configured_is_an_error_result():
    handler = CommandHandler(device_id=DEV, firmware=None, publisher=None)
    result = await handler.handle(_cmd())
    assert not result.ok and result.error_reason == "no_firmware"


async def test_commands_over_a_real_pty():
    with PtyFirmware(GatewayEmulator(faults=Faults(disk_write_errors=True))) as pty:
        firmware = FirmwareClient(SerialLink(pty.port), timeout_s=1.0)
        handler = CommandHandler(device_id=DEV, firmware=firmware, publisher=None)
        try:
            result = await handler.handle(_cmd(id="pty-1"))
        finally:
            await firmware.close()
    assert result.ok
    assert [f["code"] for f in result.result["faults"]] == ["disk_reallocated_sectors"]


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_payloads = st.one_of(
    st.binary(max_size=300),
    _json_value.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "v": _json_value | st.just(1),
            "id": st.text(max_size=70) | st.just("ok-id"),
            "cmd": st.sampled_from(["self_test", "fetch_log", "reboot", "rm"]) | _json_value,
            "args": _json_value | st.dictionaries(st.sampled_from(["max_bytes", "x"]), _json_value),
        },
    ).map(lambda d: json.dumps(d).encode()),
)


@pytest.fixture(scope="module")
def repo() -> TokenRepositorySimulator:
    return TokenRepositorySimulator()


@given(payloads=st.lists(_payloads, min_size=1, max_size=8))
@settings(
    max_examples=60,
    deadline=None,
    # too_slow as in every profile: a list given here replaces the profile's
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_arbitrary_payloads_never_crash_and_are_counted_in_the_next_report(
    tmp_path_factory, repo, payloads
):
    """Each payload gets one result the cloud can parse; every failure shows in health."""
    data_dir = tmp_path_factory.mktemp("agent")
    firmware = FirmwareClient(InProcessLink(GatewayEmulator()), timeout_s=0.2)
    agent = open_agent(
        device_id=DEV,
        data_dir=data_dir,
        connection=None,
        root_keyset=repo.root_keyset,
        firmware=firmware,
        health_interval_s=3600,
    )
    try:
        failed = 0
        for payload in payloads:
            result = await agent.commands.handle(payload)
            parsed = parse_command_result(result_to_json(result), topic_device_id=DEV)
            assert parsed.ok == result.ok
            if not result.ok:
                failed += 1
                assert result.error_reason
                try:
                    expected_id = parse_command(payload).id
                except BadCommand as exc:
                    expected_id = exc.command_id or UNKNOWN_ID
                assert result.id == expected_id
        assert agent.health is not None
        await agent.health.collect_once()
        report = agent.health.outbox.pending(10)[-1].report
        assert sum(report["errors"]["cmd"].values()) == failed
        assert agent.commands.handled == len(payloads)
    finally:
        agent.close()


class RecordingPublisherSimulator:
    """A connected broker that acknowledges every publish and keeps what was sent."""

    def __init__(self, *, expect: int) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.all_sent = asyncio.Event()  # ``expect`` results were published
        self._expect = expect
        self._connected = asyncio.Event()
        self._connected.set()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    async def publish(self, topic: str, payload: bytes, *, timeout_s: float) -> None:
        self.sent.append((topic, payload))
        if len(self.sent) >= self._expect:
            self.all_sent.set()


async def test_a_full_queue_answers_busy_and_counts_it():
    """Commands beyond the queue get a typed ``busy`` answer each, not silence."""
    publisher = RecordingPublisherSimulator(expect=3)
    handler = CommandHandler(
        device_id=DEV,
        firmware=FirmwareClient(InProcessLink(GatewayEmulator()), timeout_s=0.2),
        publisher=publisher,
        queue_size=1,
    )
    # three arrive before the handler runs: one fits, two find the queue full
    handler.submit(_cmd(id="first"))
    handler.submit(_cmd(id="second", cmd="fetch_log"))
    handler.submit(b'{"v": 1, "id": "third", "cmd": 42}')  # malformed too: still busy
    assert handler.errors == {"busy": 2}
    task = asyncio.create_task(handler.run())
    try:
        async with asyncio.timeout(HANG_S):
            await publisher.all_sent.wait()
    finally:
        await cancel_and_wait([task])
    results = {
        r.id: r for r in (parse_command_result(p, topic_device_id=DEV) for _, p in publisher.sent)
    }
    assert set(results) == {"first", "second", "third"}
    assert results["first"].ok
    for busy in ("second", "third"):
        assert not results[busy].ok and results[busy].error_reason == "busy"
    assert {topic for topic, _ in publisher.sent} == {f"entitle/v1/dev/{DEV}/cmd/res"}
    assert handler.errors == {"busy": 2} and handler.answered == 3
