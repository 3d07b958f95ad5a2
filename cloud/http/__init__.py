"""HTTP plumbing shared by every feature's routes; it imports no feature.

``deps`` (the app's store, settings, clock and bridge, and ``provided(Service)``
for a slice's own ``Annotated`` alias), ``errors`` (the one handler that maps
the error tree to HTTP, and the OpenAPI side of it), ``inputs`` (strict bodies
and URL parameters), ``body_limit`` and ``schemas`` (the error and readiness
bodies, the id patterns). Who is calling is :mod:`cloud.accounts.deps`; the
router of every feature's routes is :mod:`cloud.router`, the readiness probe
:mod:`cloud.probe`.
"""

__all__: list[str] = []
