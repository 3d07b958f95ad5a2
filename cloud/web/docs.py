"""``/docs``: Swagger UI from our own ``/static/vendor/swagger-ui`` (works with no network)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.web.templates import render

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def api_docs(request: Request) -> HTMLResponse:
    """The interactive API reference of ``/openapi.json``."""
    return render(request, "docs.html")
