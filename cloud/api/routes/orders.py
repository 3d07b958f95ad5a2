"""Orders, transactions, payments, refunds and invoices."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
