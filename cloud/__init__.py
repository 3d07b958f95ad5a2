"""The Entitle cloud: installations, devices, grants, and the tokens devices enforce.

Layout: ``domain/`` pure rules; ``store/`` SQLAlchemy + Alembic; ``signer``
issuer keys; ``apikeys`` operators' API keys; ``issuing`` change -> token ->
publish; ``bridge`` MQTT; ``jobs`` refresh; ``api/`` + ``app`` FastAPI;
``ports`` the I/O Protocols and ``testing`` their simulators. Errors: see
:mod:`cloud.errors`.

``create_app`` is imported lazily so that ``cloud.devices.rules`` stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloud.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from cloud.app import create_app

        return create_app
    raise AttributeError(f"module 'cloud' has no attribute {name!r}")
