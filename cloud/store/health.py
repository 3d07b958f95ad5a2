"""Tables: health reports, device state, aggregates, diagnoses, commands and support tickets."""

from __future__ import annotations

__all__: list[str] = []
