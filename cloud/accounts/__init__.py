"""Accounts: users and partner companies, memberships, login sessions, scoping, the audit log.

Modules (imported by name; this package imports none of them, so that the
store and the API can import any one without cycles):

- :mod:`cloud.accounts.passwords`   argon2id hashing, rehash when the parameters change
- :mod:`cloud.accounts.users`       users, blacklist, authorised contacts
- :mod:`cloud.accounts.companies`   partner companies and how they pay
- :mod:`cloud.accounts.memberships` system integrators (companies) and the owner (a user)
- :mod:`cloud.accounts.sessions`    dashboard logins: throttled attempts, hashed session tokens
- :mod:`cloud.accounts.access`      which installations and devices a principal may see or change
- :mod:`cloud.accounts.audit`       the append-only audit log

Every function takes the SQLAlchemy ``Session`` of the caller's transaction
(``with store.transaction() as tx: tx.session``) and ``now`` where time matters.
"""

__all__: list[str] = []
