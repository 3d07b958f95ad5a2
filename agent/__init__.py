"""The on-device agent.

verifier (pure trust state machine) → store (SQLite, atomic) → runtime
(MQTT session, expiry timer, enforcers) → api (local Unix-socket queries).
Errors: untrusted input raises :mod:`protocol.errors` leaves; the store
raises :class:`agent.store.StoreError`; transport errors are retried.
"""

from agent.runtime import Agent, Enforcer
from agent.store import Store, StoreError
from agent.verifier import TrustState, accept_keyset, accept_token, provision, restore

__all__ = [
    "Agent",
    "Enforcer",
    "Store",
    "StoreError",
    "TrustState",
    "accept_keyset",
    "accept_token",
    "provision",
    "restore",
]
