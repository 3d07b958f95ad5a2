"""Device health: what devices report, what it means, and what support can do remotely.

Owns health ingest (MQTT to the database, batched, acked after commit),
the health tables and hourly roll-ups, diagnostics that tell a remote fix
from a true RMA, remote commands and their answers, gap repair (asking a
device to resend what the cloud never got), and retention.

- ``rules``        diagnostics and gap planning (pure)
- ``tables``       the rows
- ``queries`` ``ingest`` ``commands`` ``gaps`` ``retention``
- ``deps``         the services a route depends on
- ``schemas``      the HTTP bodies
- ``routes``       ``/devices/{id}/health``, ``/devices/{id}/commands``
"""

__all__: list[str] = []
