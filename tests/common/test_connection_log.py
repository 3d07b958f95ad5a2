"""The MQTT reconnect loops' log (common.mqtt.ConnectionLog): each change of state once."""

from __future__ import annotations

import logging

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import ConnectionLog, refused_login

_log = logging.getLogger("test.connection")


def _connack(code: int) -> MqttConnectError:
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=code))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_connack(0x86), "bad user name or password"),
        (_connack(0x87), "not authorized"),
        (MqttConnectError(4), "bad user name or password"),  # MQTT 3.1.1 return codes
        (MqttConnectError(5), "not authorized"),
        (_connack(0x88), None),  # server unavailable: not a credentials problem
        (aiomqtt.MqttCodeError(0x87, "subscribe refused"), None),  # a SUBACK, not a login
        (aiomqtt.MqttError("[Errno 111] Connection refused"), None),
    ],
)
def test_refused_login_is_only_a_refused_connack(error: aiomqtt.MqttError, reason: str) -> None:
    assert refused_login(error) == reason


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == _log.name]


def test_each_change_of_state_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=_log.name)
    report = ConnectionLog(_log, where="broker:1883", login="gw-1")
    for delay in (0.5, 1.0, 2.0):
        report.failed(_connack(0x86), retry_in_s=delay)
    [(level, message)] = _records(caplog)
    assert level == logging.ERROR
    assert message == (
        "the broker at broker:1883 refused login 'gw-1': bad user name or password; check the "
        "user and password in ENTITLE_BROKER_URL (mqtt://USER:PASSWORD@host:port) or "
        "ENTITLE_BROKER_PASSWORD_FILE; still retrying (next in 0.5s), as the broker may get "
        "the account later"
    )

    caplog.clear()
    down = aiomqtt.MqttError("[Errno 111] Connection refused")
    report.failed(down, retry_in_s=4.0)  # another state: said
    report.failed(down, retry_in_s=8.0)
    report.connected("connected to the broker at broker:1883 as device gw-1")
    report.failed(down, retry_in_s=0.5)  # after a connection, the same error is news again
    assert _records(caplog) == [
        (
            logging.WARNING,
            "broker at broker:1883: [Errno 111] Connection refused; still retrying (next in 4.0s)",
        ),
        (logging.INFO, "connected to the broker at broker:1883 as device gw-1"),
        (
            logging.WARNING,
            "broker at broker:1883: [Errno 111] Connection refused; still retrying (next in 0.5s)",
        ),
    ]
