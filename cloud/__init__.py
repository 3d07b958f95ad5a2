"""The Entitle cloud: installations, devices, grants, and the tokens devices enforce.

Layout: one package per feature, each with its ``rules`` (pure), ``tables``,
queries or service, ``deps``, ``schemas``, ``routes`` and ``jobs`` (see each
package's docstring). Bottom to top, each importing only those below it (a
layers contract in pyproject.toml keeps it): the plumbing (``errors``,
``ports``, ``settings``; ``database``, ``jobs``, ``bridge``; ``http``), then
``accounts`` < ``devices`` < ``notifications`` < ``billing`` <
``subscriptions`` < ``health`` < ``tickets``, then ``schema`` (every table),
``probe``, ``router`` (every feature's routes) and ``app`` (the factory and
``CloudState``). ``testing`` holds the simulators of the I/O boundaries.
Errors: see :mod:`cloud.errors`.

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
