"""The CLI tests' fixture: a real Mosquitto."""

from tests.broker_fixtures import broker  # noqa: F401  (fixture, found by name)
