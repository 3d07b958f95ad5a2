"""A list of broker URLs (the nodes of a cluster): parsed once, and the client fails over."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError

from common.mqtt import Endpoint, Link, LinkError, MqttClient, Reconnects, unreachable
from common.settings import parse_broker_url, without_password
from tests.broker_fixtures import (  # noqa: F401  (fixtures)
    FixtureBroker,
    engine_broker,
    nats_cluster,
    shared_broker,
)
from tests.waiting import HANG_S

_log = logging.getLogger("test.failover")


def test_comma_separated_urls_are_the_nodes_of_one_cluster() -> None:
    address = parse_broker_url(
        "mqtt://dev-1:pw@node1:1883, mqtt://node2:1884,mqtt://dev-1@node3:1885"
    )
    assert (address.host, address.port, address.username) == ("node1", 1883, "dev-1")
    assert address.password is not None and address.password.get_secret_value() == "pw"
    assert address.fallbacks == (("node2", 1884), ("node3", 1885))
    assert parse_broker_url("mqtt://u:p@h:1").fallbacks == ()


@pytest.mark.parametrize(
    "url",
    ["mqtt://a:p@h:1,mqtts://h2:2", "mqtt://a:p@h:1,mqtt://b:p@h2:2", "mqtt://a@h:1,http://h2:2"],
)
def test_a_cluster_has_one_scheme_and_one_login(url: str) -> None:
    with pytest.raises(ValueError):
        parse_broker_url(url)


def test_no_password_of_any_node_is_shown() -> None:
    shown = without_password("mqtt://u:secret1@h:1,mqtt://u:secret2@h2:2")
    assert "secret" not in shown and shown.count("***") == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


async def test_a_dead_first_node_fails_over_to_the_next(engine_broker: FixtureBroker) -> None:  # noqa: F811
    """On each engine: the first address is dead, the second is the broker."""
    user, password = engine_broker.new_device("failover")
    dead = _closed_port()
    endpoint = Endpoint(
        "127.0.0.1",
        dead,
        username=user,
        password=password,
        identifier=user,
        protocol=engine_broker.mqtt_protocol,
        fallbacks=(("127.0.0.1", engine_broker.port),),
    )
    client = MqttClient(endpoint, log=_log, backoff_base_s=0.01, backoff_cap_s=0.05)
    assert client.address == ("127.0.0.1", dead)

    async def idle(link: Link) -> None:
        await asyncio.Event().wait()

    async def nothing(link: Link) -> None:
        pass

    task = asyncio.create_task(client.run(on_connect=nothing, consume=idle, connected_message="up"))
    try:
        await client.wait_connected(HANG_S)
        assert client.address == ("127.0.0.1", engine_broker.port)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_only_a_connection_no_broker_took_is_unreachable() -> None:
    """A node that is down refuses the TCP connection (aiomqtt hides the socket's error
    ``from None``: it stays the context); a refused login or subscription is a broker's
    answer, not a dead node."""
    with pytest.raises(aiomqtt.MqttError) as refused:
        async with aiomqtt.Client("127.0.0.1", _closed_port(), timeout=HANG_S):
            pass
    assert unreachable(refused.value)
    assert unreachable(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))  # paho's own
    assert unreachable(OSError(errno.EHOSTUNREACH, "no route to host"))
    assert not unreachable(MqttConnectError(5))  # not authorized
    assert not unreachable(LinkError("the broker refused the subscription to x"))
    assert not unreachable(aiomqtt.MqttError("Operation timed out"))
    assert not unreachable(OSError(errno.ECONNRESET, "reset"))  # a broker took it, then died


def _down() -> aiomqtt.MqttError:
    try:
        raise aiomqtt.MqttError("[Errno 111] Connection refused") from ConnectionRefusedError(
            errno.ECONNREFUSED, "refused"
        )
    except aiomqtt.MqttError as exc:
        return exc


def test_a_dead_node_is_skipped_at_once_while_other_nodes_remain_to_try() -> None:
    """With three nodes and a backoff grown by failures, the dead node's turn costs
    ``skip_s``; when all three refuse in a row, the round ends in one backoff."""
    retries = Reconnects(3, base_s=1.0, cap_s=30.0, rng=random.Random(7), skip_s=0.05)
    refusal = LinkError("the broker refused the subscription to x")  # a live node, not ready
    grown = [retries.failed(refusal) for _ in range(5)]
    assert grown[-1] >= 8.0  # backoff_delay(4, base 1): 8..16 s
    assert retries.failed(_down()) == 0.05  # the dead node: the next one at once
    after = retries.failed(refusal)
    assert after >= 15.0  # the live node's backoff goes on growing (attempt 5: 16..32 → cap)
    assert [retries.failed(_down()) for _ in range(2)] == [0.05, 0.05]
    assert retries.failed(_down()) >= 15.0  # the third in a row: every node refused
    retries.connected()
    assert retries.failed(refusal) <= 1.0  # a good connection starts the backoff afresh


def test_a_single_broker_that_is_down_gets_the_usual_backoff() -> None:
    retries = Reconnects(1, base_s=1.0, cap_s=30.0, rng=random.Random(7), skip_s=0.05)
    delays = [retries.failed(_down()) for _ in range(6)]
    assert all(d > 0.05 for d in delays) and delays[-1] >= 16.0
