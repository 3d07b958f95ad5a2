"""The on-device agent.

verifier (pure trust state machine) → store (SQLite, atomic) → runtime
(MQTT session, expiry timer, enforcers) → api (local Unix-socket queries).
Errors are :mod:`protocol.errors`' tree: untrusted input raises an
``UntrustedDataError`` leaf (logged and counted, the state kept); transport
errors are retried; the store raises ``StoreError`` (re-exported as
:class:`agent.store.StoreError`), which says what to do next.
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
