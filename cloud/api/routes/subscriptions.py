"""Subscriptions: catalogue, purchase, renewal, deactivate/reactivate."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
