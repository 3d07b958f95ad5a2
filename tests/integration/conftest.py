"""The integration tests' fixtures: a real Mosquitto (or the embedded broker), PostgreSQL."""

from tests.broker_fixtures import (  # noqa: F401  (fixtures, found by name)
    broker,
    embedded_broker,
    engine_broker,
    nats_cluster,
    require_mosquitto,
    shared_broker,
)
from tests.database_fixtures import postgres_admin, postgres_url  # noqa: F401  (fixtures)
