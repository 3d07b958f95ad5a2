"""A limit on request bodies, checked before anything reads them (pure ASGI).

A declared ``Content-Length`` over the limit is answered 413 before the app
runs; a body without one (chunked) is counted as it streams, and the read
that passes the limit raises the 413 instead of returning bytes, so no
parser sees more than the limit and no route runs on such a body.

FastAPI's own ``max_body_size`` is not used: it answers a declared length
only when the route reads the body, so a route without one (``/deactivate``)
would run first and be answered 413 afterwards.
"""

from __future__ import annotations

import re

from fastapi.exception_handlers import http_exception_handler
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.http.errors import body_too_large

__all__ = ["BodyLimit"]


class BodyLimit:
    """413 for a request body over ``max_bytes`` (``settings.http_max_body_bytes``)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, uploads: tuple[re.Pattern[str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads  # POSTs to paths matching the pattern may send this much

    def _limit(self, scope: Scope) -> int:
        if self.uploads is not None and scope.get("method") == "POST":
            pattern, larger = self.uploads
            if pattern.fullmatch(scope.get("path", "")):
                return max(larger, self.max_bytes)
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            refusal = body_too_large(limit)
            await (await http_exception_handler(Request(scope), refusal))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # an HTTPException: FastAPI passes it on to the app's handler (413 JSON)
                    raise body_too_large(limit)
            return message

        await self.app(scope, counted, send)
