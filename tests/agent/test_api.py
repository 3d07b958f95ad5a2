"""The agent's local API (agent.api): h11 on asyncio's Unix server, against a real agent.

The same three routes and JSON bodies uvicorn/starlette served; a client that
speaks HTTP badly gets a 4xx and a closed connection, never a stuck task.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.api import query, respond, serve
from agent.runtime import Agent, open_agent
from common.tasks import cancel_and_wait
from simulators import TokenRepositorySimulator
from tests.waiting import HANG_S

DAY = 86400


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    repo = TokenRepositorySimulator()
    now = int(time.time())
    agent = open_agent(
        device_id="dev-api",
        data_dir=tmp_path / "agent",
        connection=None,
        root_keyset=repo.root_keyset,
    )
    assert await agent.apply_token(
        repo.token("dev-api", {"remote_access": now + DAY, "voice control": now + DAY}, now=now)
    )
    yield agent
    agent.close()


@pytest.fixture
async def api(agent: Agent, tmp_path: Path) -> AsyncIterator[Path]:
    """The API of ``agent`` listening on a socket in ``tmp_path``."""
    path = tmp_path / "api.sock"
    listening = asyncio.Event()
    task = asyncio.create_task(serve(agent, path, listening=listening.set))
    async with asyncio.timeout(HANG_S):
        await listening.wait()
    yield path
    await cancel_and_wait([task])
    assert not path.exists()  # removed when the API stops


async def _exchange(path: Path, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(HANG_S):
            return await reader.read()
    finally:
        writer.close()


def _parts(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


async def _get(path: Path, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = f"{method} {target} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n"
    return _parts(await _exchange(path, request.encode()))


async def test_the_three_routes_answer_from_the_agent(agent: Agent, api: Path) -> None:
    status, headers, body = await _get(api, "/features")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "device_id": "dev-api",
        "features": [
            {"feature": n, "allowed": a, "reason": r}
            for n, (a, r) in sorted(agent.decisions().items())
        ],
    }
    assert [f["feature"] for f in json.loads(body)["features"]] == [
        "remote_access",
        "voice control",
    ]
    status, _, body = await _get(api, "/features/remote_access?verbose=1")
    assert status == 200 and json.loads(body)["allowed"] is True
    status, _, body = await _get(api, "/features/voice%20control")  # the name is unquoted
    assert json.loads(body) == {
        "feature": "voice control",
        "allowed": True,
        "reason": agent.check("voice control")[1],
    }
    status, _, body = await _get(api, "/features/video_retention")
    assert status == 200 and json.loads(body)["allowed"] is False
    status, _, body = await _get(api, "/status")
    assert status == 200 and json.loads(body)["token_ver"] == agent.state.ver == 1


async def test_unknown_paths_and_methods(api: Path) -> None:
    for target in ("/", "/nope", "/features/", "/features/a/b", "/status/x"):
        status, _, body = await _get(api, target)
        assert (status, body) == (404, b"Not Found"), target
    status, headers, body = await _get(api, "/status", method="POST")
    assert (status, body, headers["allow"]) == (405, b"Method Not Allowed", "GET, HEAD")
    status, headers, body = await _get(api, "/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


async def test_one_connection_carries_several_requests(api: Path) -> None:
    one = b"GET /features/remote_access HTTP/1.1\r\nhost: a\r\n\r\n"
    last = b"GET /status HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n"
    raw = await _exchange(api, one + one + last)
    assert raw.count(b"HTTP/1.1 200 ") == 3


async def test_a_malformed_request_gets_400_and_a_closed_connection(api: Path) -> None:
    status, _, _ = _parts(await _exchange(api, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400


async def test_an_oversized_request_is_refused_unread(api: Path) -> None:
    huge = b"GET /status HTTP/1.1\r\nhost: a\r\nx-pad: " + b"a" * 40_000 + b"\r\n\r\n"
    status, _, _ = _parts(await _exchange(api, huge))
    assert status == 431
    body = b"x" * 20_000
    request = b"GET /status HTTP/1.1\r\nhost: a\r\ncontent-length: %d\r\n\r\n" % len(body)
    status, _, _ = _parts(await _exchange(api, request + body))
    assert status == 413


async def test_a_client_that_leaves_mid_request_does_not_stop_the_api(api: Path) -> None:
    _, writer = await asyncio.open_unix_connection(str(api))
    writer.write(b"GET /sta")
    await writer.drain()
    writer.close()
    status, _, _ = await _get(api, "/status")
    assert status == 200


async def test_query_is_the_matching_client(api: Path) -> None:
    status, body = await asyncio.to_thread(query, api, "/features/remote_access")
    assert status == 200 and body["allowed"] is True


def test_query_without_a_listener_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        query(tmp_path / "none.sock", "/status")


async def test_a_failing_read_is_a_500_and_the_api_keeps_serving(tmp_path: Path) -> None:
    class Broken:
        """An agent view whose status read fails (the routes must not die with it)."""

        device_id = "x"

        def decisions(self) -> dict[str, tuple[bool, str]]:
            return {}

        def check(self, feature: str) -> tuple[bool, str]:
            return False, "not named"

        def status_details(self) -> dict[str, object]:
            raise RuntimeError("boom")

    path = tmp_path / "broken.sock"
    listening = asyncio.Event()
    task = asyncio.create_task(serve(Broken(), path, listening=listening.set))
    try:
        async with asyncio.timeout(HANG_S):
            await listening.wait()
        assert (await _get(path, "/status"))[0] == 500
        assert (await _get(path, "/features"))[0] == 200
    finally:
        await cancel_and_wait([task])
    assert respond(Broken(), "GET", "/features/x")[0] == 200
