"""Cloud errors as HTTP errors: the one place the mapping lives."""

from __future__ import annotations

from fastapi import HTTPException, status

from cloud.errors import CloudError, Conflict, InvalidGrant, NotFound

__all__ = ["http_error"]


def http_error(exc: CloudError) -> HTTPException:
    """404 for unknown ids, 409 for conflicts, 422 for invalid grants, else 500."""
    if isinstance(exc, NotFound):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, Conflict):
        code = status.HTTP_409_CONFLICT
    elif isinstance(exc, InvalidGrant):
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    else:
        code = status.HTTP_500_INTERNAL_SERVER_ERROR
    return HTTPException(status_code=code, detail=str(exc))
