"""The REST API under ``/api/v1``: routers, dependencies and HTTP bodies."""

from cloud.api.routes import api_router

__all__ = ["api_router"]
