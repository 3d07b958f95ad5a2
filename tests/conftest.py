"""Shared pytest setup: each area's fixtures live in their own plugin module."""

pytest_plugins = ["tests.broker_fixtures", "tests.database_fixtures", "tests.smtp_fixtures"]
