"""Local query API on a Unix socket, for other processes on the device.

``GET /features`` → every feature the token names with its decision;
``GET /features/{name}`` → one decision (a feature the token does not name
is simply not allowed); ``GET /status`` → token, key set, trusted time,
clock set-back and rejection counters. Read-only: nothing here changes state.

HTTP/1.1 by h11 over asyncio's Unix server: three routes do not need a web
framework, and uvicorn and starlette cost the agent more memory than the rest of
its network code. Requests are bounded (a head still incomplete past 16 KiB gets
431, a body over 16 KiB 413) and an idle connection is closed after 30 s.
:func:`query` is the matching client (``entitle-agent check``), on the standard
library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import h11

__all__ = ["AgentView", "query", "respond", "serve"]

log = logging.getLogger(__name__)

_MAX_REQUEST_BYTES = 16 * 1024
_IDLE_TIMEOUT_S = 30.0
_READ_CHUNK = 16 * 1024
_SERVER = b"entitle-agent"


class AgentView(Protocol):
    """What the local API reads of the agent (:class:`agent.runtime.Agent` is one).

    The API depends on this small interface, not on the runtime, so the runtime
    can start the API without the two importing each other.
    """

    @property
    def device_id(self) -> str: ...

    def decisions(self) -> Mapping[str, tuple[bool, str]]: ...

    def check(self, feature: str) -> tuple[bool, str]: ...

    def status_details(self) -> dict[str, Any]: ...


def _decision(name: str, allowed: bool, reason: str) -> dict[str, object]:
    return {"feature": name, "allowed": allowed, "reason": reason}


def _json(content: object) -> tuple[int, bytes, bytes]:
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return 200, b"application/json", body.encode()


def _text(status: int, text: str) -> tuple[int, bytes, bytes]:
    return status, b"text/plain; charset=utf-8", text.encode()


def _route(path: str) -> tuple[str, str] | None:
    """``(route, feature name)`` for a path, ``None`` for an unknown one."""
    if path in ("/features", "/status"):
        return path[1:], ""
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "features" and parts[2]:
        return "feature", unquote(parts[2])
    return None


def respond(agent: AgentView, method: str, target: str) -> tuple[int, bytes, bytes]:
    """``(status, content type, body)`` for one request: the routes, without I/O."""
    route = _route(target.partition("?")[0])
    if route is None:
        return _text(404, "Not Found")
    if method not in ("GET", "HEAD"):
        return _text(405, "Method Not Allowed")
    match route:
        case ("features", _):
            decisions = sorted(agent.decisions().items())
            return _json(
                {
                    "device_id": agent.device_id,
                    "features": [_decision(n, a, r) for n, (a, r) in decisions],
                }
            )
        case ("feature", name):
            return _json(_decision(name, *agent.check(name)))
        case _:
            return _json(agent.status_details())


async def serve(
    agent: AgentView, socket_path: Path, *, listening: Callable[[], None] | None = None
) -> None:
    """Serve the local API until cancelled; the socket is removed afterwards.

    ``listening`` is called once the socket accepts connections.
    """
    socket_path.parent.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # noqa: ASYNC240
    connections: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _serve_connection(agent, reader, writer)
        finally:
            connections.discard(task)

    server = await asyncio.start_unix_server(connected, path=str(socket_path))
    try:
        if listening is not None:
            listening()
        await server.serve_forever()
    finally:
        server.close()
        for task in list(connections):  # 3.11's server leaves its connections running
            task.cancel()
        if connections:
            await asyncio.wait(list(connections))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)


async def _serve_connection(
    agent: AgentView, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer requests on one connection (keep-alive) until it closes or idles out."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
    try:
        while True:
            request = await _next_event(conn, reader)
            if not isinstance(request, h11.Request):
                return  # closed, or idle too long
            received = 0
            while not isinstance(event := await _next_event(conn, reader), h11.EndOfMessage):
                if not isinstance(event, h11.Data):
                    return
                received += len(event.data)
                if received > _MAX_REQUEST_BYTES:
                    await _send(conn, writer, "GET", _text(413, "Request Too Large"), close=True)
                    return
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            try:
                answer = respond(agent, method, target)
            except Exception:  # one failing read must not stop the API
                log.exception("local API: %s %s failed", method, target)
                answer = _text(500, "Internal Server Error")
            await _send(conn, writer, method, answer)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            with contextlib.suppress(h11.LocalProtocolError, OSError):
                await _send(conn, writer, "GET", _text(status, "Bad Request"), close=True)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    """The next h11 event, reading as needed; ``None`` when the client idles too long."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            async with asyncio.timeout(_IDLE_TIMEOUT_S):
                data = await reader.read(_READ_CHUNK)
        except TimeoutError:
            return None
        conn.receive_data(data)  # b"" tells h11 the client closed


async def _send(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    method: str,
    answer: tuple[int, bytes, bytes],
    *,
    close: bool = False,
) -> None:
    status, content_type, body = answer
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"server", _SERVER),
    ]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    if close:
        headers.append((b"connection", b"close"))
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
    if method != "HEAD" and body:
        writer.write(conn.send(h11.Data(data=body)) or b"")
    writer.write(conn.send(h11.EndOfMessage()) or b"")
    await writer.drain()


def query(socket_path: Path, path: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    """``GET path`` from a running agent's socket: ``(status, decoded JSON body)``.

    Raises:
        OSError: nothing listens on ``socket_path`` (or it timed out).
        ValueError: the answer is not JSON.
    """
    import http.client  # only `entitle-agent check` asks; the running agent never does

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(str(socket_path))

    connection = _UnixConnection("agent", timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    except http.client.HTTPException as exc:
        raise OSError(f"the agent at {socket_path} answered badly: {exc}") from exc
    finally:
        connection.close()
