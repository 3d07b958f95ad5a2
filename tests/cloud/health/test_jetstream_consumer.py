"""The JetStream health consumer stops as a task is expected to when the app shuts down."""

from __future__ import annotations

import asyncio
import sys

import pytest

from broker.mosquitto import find_free_port
from cloud.health import jetstream
from cloud.health.jetstream import JetStreamHealth


async def test_a_cancel_while_waiting_to_reconnect_is_a_plain_cancel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found by fresh-clone-ci beside stress-ng (Debian Python 3.11.2; 3.11.4+ no longer
    # wraps a lone exception raised in except*): the app's shutdown failed with
    # BaseExceptionGroup([CancelledError]) when the consumer was cancelled in its backoff
    # sleep, which ran inside ``except*``; a task group takes only a plain cancel as one.
    waiting = asyncio.Event()
    real_delay, real_sleep = jetstream.backoff_delay, asyncio.sleep
    backoffs: list[float] = []
    handling: list[BaseException | None] = []  # the exception handled when the backoff sleeps

    def delay_and_tell(*args: object, **kwargs: object) -> float:
        waiting.set()
        backoffs.append(real_delay(*args, **kwargs))  # type: ignore[arg-type]
        return backoffs[-1]

    async def sleep(delay: float, *args: object) -> object:
        if delay in backoffs:  # the consumer's backoff: is it still inside a handler?
            handling.append(sys.exception())
        return await real_sleep(delay, *args)

    class Lost:  # test doubles: a connection whose pull fails, as a node that went away
        is_closed = True

        async def fetch(self, *_: object, **__: object) -> None:
            raise ConnectionResetError("the node went away")

    async def connected(**_: object) -> Lost:
        return Lost()

    async def set_up(_: object) -> Lost:
        return Lost()

    monkeypatch.setattr(jetstream, "backoff_delay", delay_and_tell)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(jetstream.nats, "connect", connected)
    nobody = f"nats://127.0.0.1:{find_free_port()}"
    consumer = JetStreamHealth([nobody], username=None, password=None, backoff_base_s=60.0)
    monkeypatch.setattr(consumer, "_setup", set_up)
    task = asyncio.create_task(consumer.run(lambda batch: None))
    async with asyncio.timeout(30):  # a hang guard, not a figure
        await waiting.wait()  # the connect failed; the consumer goes on to its backoff sleep
    await asyncio.sleep(0)
    assert not task.done()
    # the wrapping above happens only on Python < 3.11.4; on any version, the backoff
    # must not sleep inside the except* handler (where a cancel would be wrapped)
    assert handling == [None]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not consumer.connected.is_set()
