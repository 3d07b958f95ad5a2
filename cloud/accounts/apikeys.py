"""Operator API keys: made here, shown once, stored as a SHA-256 with a public prefix.

A key is ``ek_`` and 32 random bytes in base64url (46 characters). Its first
eleven characters are stored in clear as a lookup prefix (``entitle cloud
apikey list`` shows them); the whole key only as its SHA-256. A slow hash
buys nothing against guessing 256 random bits, and a fast one keeps the
check on every request cheap. Matching uses :func:`hmac.compare_digest`.

A key either belongs to a user (``user_id``; it acts as that user, with
the user's role at the time of each request, and stops working when the user
is disabled) or is a bare key with its own ``role`` (``admin`` from
``entitle cloud apikey create``, to bootstrap the first accounts).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from cloud.accounts import queries as account_queries
from cloud.accounts.tables import ApiKeyRow, UserRow
from cloud.database import Store
from cloud.errors import InvalidApiKey, MissingApiKey, RevokedApiKey, UnknownApiKey, UnknownUser

__all__ = [
    "ADMIN",
    "CREATE_HINT",
    "KEY_PREFIX",
    "NewApiKey",
    "Principal",
    "add_api_key",
    "authenticate",
    "bootstrap_api_key",
    "create_api_key",
    "key_hash",
    "key_prefix",
    "list_api_keys",
    "new_key",
    "revoke_api_key",
]

_log = logging.getLogger(__name__)

KEY_PREFIX = "ek_"
ADMIN = "admin"
CREATE_HINT = "entitle cloud apikey create --name NAME"
MAX_NAME = 100
_SECRET_BYTES = 32
_LOOKUP_CHARS = len(KEY_PREFIX) + 8  # 48 random bits: rarely shared, never enough to guess
_KEY_CHARS = len(KEY_PREFIX) + 43  # base64url of 32 bytes, unpadded


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: an API key, or a user through a login session or their key.

    ``key_id`` is None for a login session; ``user_id`` is None for a bare
    (admin) API key. ``role`` is always set: the user's role, or the bare key's.
    """

    key_id: int | None
    name: str
    role: str
    user_id: int | None = None
    locale: str | None = None  # the user's dashboard language (None: the browser's)

    @property
    def actor(self) -> str:
        """How the audit log names this principal: ``user:<id>`` or ``apikey:<id>``."""
        return f"user:{self.user_id}" if self.user_id is not None else f"apikey:{self.key_id}"


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: ``key`` is shown to the operator once and stored nowhere."""

    id: int
    name: str
    prefix: str
    role: str
    created_at: int
    key: str

    def __repr__(self) -> str:
        return f"NewApiKey(id={self.id}, name={self.name!r}, prefix={self.prefix!r})"


def new_key() -> str:
    """A fresh random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def key_prefix(key: str) -> str:
    """The part of a key stored in clear to find its row."""
    return key[:_LOOKUP_CHARS]


def key_hash(key: str) -> str:
    """What is stored of a key: hex SHA-256 of its UTF-8 text."""
    return hashlib.sha256(key.encode()).hexdigest()


def _check_name(name: str) -> str:
    name = name.strip()
    if not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise ValueError(f"an API key name must be 1-{MAX_NAME} printable characters")
    return name


def create_api_key(
    store: Store, *, name: str, now: int, role: str = ADMIN, user_id: int | None = None
) -> NewApiKey:
    """Create and store a key; the returned :attr:`NewApiKey.key` is the only copy.

    With ``user_id`` the key acts as that user (``role`` is then the user's).

    Raises:
        ValueError: an empty, over-long or unprintable name.
        UnknownUser: no user has this id.
    """
    with store.transaction() as tx:
        return add_api_key(tx, name=name, now=now, role=role, user_id=user_id)


def add_api_key(
    tx: Session, *, name: str, now: int, role: str = ADMIN, user_id: int | None = None
) -> NewApiKey:
    """:func:`create_api_key` inside the caller's transaction (to audit it in the same one).

    Raises:
        ValueError, UnknownUser: as :func:`create_api_key`.
    """
    name = _check_name(name)
    key = new_key()
    if user_id is not None:
        user = tx.get(UserRow, user_id)
        if user is None:
            raise UnknownUser(f"no user with id {user_id}: see 'entitle cloud user list'")
        role = user.role.value
    row = account_queries.add_api_key(
        tx, name=name, prefix=key_prefix(key), key_hash=key_hash(key), role=role, now=now
    )
    row.user_id = user_id
    tx.flush()
    _log.info("API key %d (%s) created, role %s, user %s", row.id, row.name, row.role, user_id)
    return NewApiKey(
        id=row.id, name=row.name, prefix=row.prefix, role=row.role, created_at=now, key=key
    )


def bootstrap_api_key(database_url: str, *, name: str, now: int) -> str:
    """Create a key in the database at ``database_url`` (migrating it first); return the key.

    For a process that starts the cloud and calls it, such as ``entitle demo``.
    """
    with Store.open(database_url) as store:
        return create_api_key(store, name=name, now=now).key


def list_api_keys(store: Store) -> Sequence[ApiKeyRow]:
    """Every key, revoked ones included, oldest first."""
    with store.transaction() as tx:
        return account_queries.api_keys(tx)


def revoke_api_key(store: Store, key_id: int, *, now: int) -> ApiKeyRow:
    """Revoke a key from now on; revoking a revoked key keeps its first revocation time.

    Raises:
        UnknownApiKey: no key has this id.
    """
    with store.transaction() as tx:
        row = account_queries.api_key(tx, key_id, lock=True)
        if row is None:
            raise UnknownApiKey(f"no API key with id {key_id}: see 'entitle cloud apikey list'")
        if row.revoked_at is None:
            row.revoked_at = now
            _log.info("API key %d (%s) revoked", row.id, row.name)
    return row


def authenticate(store: Store, presented: str | None) -> Principal:
    """The principal a presented key stands for.

    Raises:
        MissingApiKey: no key.
        InvalidApiKey: no stored key matches.
        RevokedApiKey: the key matches a revoked key, or its user is disabled.
    """
    if not presented:
        raise MissingApiKey(
            f"missing API key: create one with '{CREATE_HINT}' "
            "and send it as 'Authorization: Bearer KEY'"
        )
    invalid = InvalidApiKey(
        f"invalid API key: check that it was copied whole, or create one with '{CREATE_HINT}'"
    )
    if len(presented) != _KEY_CHARS or not presented.startswith(KEY_PREFIX):
        raise invalid
    digest = key_hash(presented)
    with store.reading() as tx:  # never queues behind a writer (the ingest's batches)
        candidates = account_queries.api_keys_with_prefix(tx, key_prefix(presented))
        # every candidate is compared, so the time taken does not say which one matched
        matches = [row for row in candidates if hmac.compare_digest(row.key_hash, digest)]
        if not matches:
            raise invalid
        row = matches[0]
        user = None if row.user_id is None else tx.get(UserRow, row.user_id)
    if row.revoked_at is not None:
        raise RevokedApiKey(
            f"API key {row.id} ({row.name}) has been revoked: create a new one with '{CREATE_HINT}'"
        )
    if row.user_id is None:
        return Principal(key_id=row.id, name=row.name, role=row.role)
    if user is None or user.disabled_at is not None:
        raise RevokedApiKey(
            f"API key {row.id} ({row.name}) belongs to a disabled user: ask an administrator"
        )
    return Principal(key_id=row.id, name=row.name, role=user.role.value, user_id=user.id)
