"""Devices: installations, devices, grants, and the signed tokens that carry them.

Owns installations and their devices (with each device's broker login),
grants of features, issuing and publishing entitlement tokens, the signing
key and its rotation, the published key set, and the refresh job that
re-issues tokens near expiry.

- ``rules``        grants, capacity, claims and the refresh plan (pure)
- ``tables``       the rows: installations, devices, grants, tokens
- ``queries``      the reads and writes, inside the caller's session
- ``credentials``  devices' broker passwords
- ``signer``       the Ed25519 signing key, rotation, the key set
- ``issuing``      issue, publish and confirm tokens
- ``jobs``         the refresh job
- ``routes``       ``/installations``, ``/devices``, ``/keys``
"""

__all__: list[str] = []
