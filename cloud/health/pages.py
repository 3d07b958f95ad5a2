"""Dashboard pages (being built; see issue 15)."""

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
