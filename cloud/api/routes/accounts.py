"""Users, partner companies, login sessions, roles and the audit log."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
