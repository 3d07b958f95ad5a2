"""Tables: users, partner companies, roles, login sessions and the audit log."""

from __future__ import annotations

__all__: list[str] = []
