"""HTTP bodies and input patterns every slice shares (pydantic: the edge, not the core).

A slice's own bodies are in its ``schemas.py``; here are only the error body,
the readiness body and the patterns of ids and names.
"""

from __future__ import annotations

from pydantic import BaseModel

from protocol.topics import DEVICE_ID_PATTERN

__all__ = [
    "DEVICE_ID_PATTERN",
    "ID_PATTERN",
    "NAME_PATTERN",
    "ErrorOut",
    "HealthOut",
]

# ids: nothing a topic, a log line or PostgreSQL text (no NUL) chokes on
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# DEVICE_ID_PATTERN: protocol.topics' rule, re-exported for the routes' path parameters
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


class ErrorOut(BaseModel):
    """The body of 401, 404 and 409 responses: what went wrong and what to do."""

    detail: str


class HealthOut(BaseModel):
    status: str
    database: str
    broker: str
    keyset_version: int
