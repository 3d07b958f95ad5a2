"""The tickets tests' app fixture (a device that answers self-tests; RMAs need them)."""

from tests.cloud.tickets.test_tickets_api import api  # noqa: F401  (the fixture)
