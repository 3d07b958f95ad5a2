"""The tickets service a route depends on, as an ``Annotated`` alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from cloud.http.deps import provided
from cloud.tickets.service import TicketService

__all__ = ["TicketsDep"]

TicketsDep = Annotated[TicketService, Depends(provided(TicketService))]
