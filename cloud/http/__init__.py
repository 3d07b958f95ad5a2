"""HTTP plumbing shared by every feature's routes.

``deps`` (who is calling, the app's state, ``require(Permission.X)``),
``errors`` (the one mapper from the error tree to HTTP), ``inputs`` (strict
bodies and URL parameters), ``body_limit``, ``router`` (every feature's
routes under ``/api/v1``) and ``probe`` (readiness). Import the router from
:mod:`cloud.http.router`; this package imports nothing, so a feature's
routes can import ``cloud.http.deps`` without a cycle.
"""

__all__: list[str] = []
