"""Typed errors the cloud raises on purpose; routes turn them into HTTP statuses.

::

    EntitleError (protocol.errors)
    └── CloudError
        ├── NotFound                 an id that does not exist (404)
        │   ├── UnknownInstallation
        │   ├── UnknownDevice
        │   ├── UnknownGrant
        │   └── UnknownApiKey
        ├── Conflict                 the request clashes with stored state (409)
        │   ├── InstallationFull     an 11th controller in one installation
        │   ├── DeviceExists
        │   └── AccountRefused       the broker accounts adapter refused the device id
        ├── InvalidGrant             a grant the protocol cannot carry (422)
        ├── NotAuthenticated         no usable API key on a request (401)
        │   ├── MissingApiKey
        │   ├── InvalidApiKey        unknown key, or the secret does not match
        │   └── RevokedApiKey
        └── KeyFileError             issuer key files missing, corrupt or exposed
            └── InsecureKeyFile      a private key readable by group or others

Transport failures (broker down) are :class:`protocol.errors.TransportError`.
"""

from __future__ import annotations

from protocol.errors import EntitleError

__all__ = [
    "AccountRefused",
    "CloudError",
    "Conflict",
    "DeviceExists",
    "InsecureKeyFile",
    "InstallationFull",
    "InvalidApiKey",
    "InvalidGrant",
    "Forbidden",
    "KeyFileError",
    "MissingApiKey",
    "NotAuthenticated",
    "NotFound",
    "RevokedApiKey",
    "UnknownApiKey",
    "UnknownDevice",
    "UnknownGrant",
    "UnknownInstallation",
]


class CloudError(EntitleError):
    """Root of the cloud's own errors."""


class NotFound(CloudError):
    """The named object does not exist."""


class UnknownInstallation(NotFound):
    """No installation with this id."""


class UnknownDevice(NotFound):
    """No device with this id."""


class UnknownGrant(NotFound):
    """No active grant of this feature in the installation."""


class UnknownApiKey(NotFound):
    """No API key with this id."""


class Conflict(CloudError):
    """The request contradicts what is stored."""


class InstallationFull(Conflict):
    """An installation already has the maximum number of controllers."""


class DeviceExists(Conflict):
    """A device with this id is already registered."""


class AccountRefused(Conflict):
    """The broker accounts adapter refused the device's login (e.g. a reserved name)."""


class InvalidGrant(CloudError):
    """A grant that cannot be put into a token (reserved names, too many features)."""


class NotAuthenticated(CloudError):
    """A request to a protected route without a usable API key."""


class MissingApiKey(NotAuthenticated):
    """No ``Authorization: Bearer`` header."""


class InvalidApiKey(NotAuthenticated):
    """A key that no stored key matches."""


class RevokedApiKey(NotAuthenticated):
    """A key that was valid but has been revoked."""


class Forbidden(CloudError):
    """Authenticated, but the role or the scope does not allow this action (403)."""


class KeyFileError(CloudError):
    """An issuer key file is missing, corrupt or does not match the key set."""


class InsecureKeyFile(KeyFileError):
    """A private key file whose permissions let others read it."""
