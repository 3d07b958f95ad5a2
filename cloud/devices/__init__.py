"""Devices: installations, devices, grants, and the signed tokens that carry them.

Owns installations and their devices (with each device's broker login),
who works on an installation (its owner and system integrators) and so
which installations and devices a principal may see or change, grants of
features, issuing and publishing entitlement tokens, the signing key and
its rotation, the published key set, and the refresh job that re-issues
tokens near expiry.

- ``rules``        grants, capacity, claims and the refresh plan (pure)
- ``tables``       the rows: installations, their owners and integrators, devices, grants, tokens
- ``queries``      the reads and writes, inside the caller's session
- ``memberships``  owners and integrators of an installation, its customer contacts
- ``access``       which installations and devices a principal may see or change
- ``signer``       the Ed25519 signing key, rotation, the key set
- ``issuing``      issue, publish and confirm tokens
- ``jobs``         the refresh job
- ``deps``         the services a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/installations``, ``/devices``, ``/keys``
"""

__all__: list[str] = []
