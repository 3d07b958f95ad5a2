"""Accounts: who may do what.

Owns users and partner companies (and how they pay), memberships (system
integrators and the owner of an installation), dashboard login sessions,
API keys, roles and permissions, which installations and devices a principal
may see or change, the blacklist and the append-only audit log.

- ``rules``        roles and permissions (pure)
- ``tables``       the rows: companies, users, owners, integrators, login sessions, audit, API keys
- ``passwords``    argon2id hashing of people's passwords
- ``users`` ``companies`` ``memberships`` ``sessions`` ``apikeys`` ``access`` ``audit``
                   the queries and writes, each inside the caller's session
- ``schemas``      the HTTP bodies
- ``routes``       ``/accounts``, ``/companies``, ``/users``, ``/api-keys``, ``/auth``
"""

__all__: list[str] = []
