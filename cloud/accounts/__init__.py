"""Accounts: who may do what.

Owns users and partner companies (and how they pay), dashboard login
sessions, API keys, roles and permissions, who a request acts as, the
blacklist and the append-only audit log. Which installations a principal may
see, and who works on one, are the devices slice's (:mod:`cloud.devices.access`,
:mod:`cloud.devices.memberships`): accounts knows nothing of installations.

- ``rules``        roles and permissions (pure)
- ``tables``       the rows: companies, users, login sessions, audit, API keys
- ``passwords``    argon2id hashing of people's passwords
- ``users`` ``companies`` ``sessions`` ``apikeys`` ``audit``
                   the queries and writes, each inside the caller's session
- ``deps``         who a request acts as, ``require(Permission.X)``
- ``schemas``      the HTTP bodies
- ``routes``       ``/accounts``, ``/companies``, ``/users``, ``/api-keys``, ``/auth``
"""

__all__: list[str] = []
