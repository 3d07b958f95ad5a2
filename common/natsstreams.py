"""The health stream on a NATS cluster: its one definition, made by whichever side starts first.

NATS acknowledges a device's QoS 1 health PUBLISH (``entitle/v1/dev/{id}/health``,
NATS subject ``entitle.v1.dev.{id}.health``) whether or not anything keeps it:
without a JetStream stream capturing the subject, a report sent while no cloud
worker had yet made the stream was acknowledged and stored nowhere. So the
broker makes the stream when it starts: each node's auth responder
(:mod:`broker.natsauth`, run by ``entitle broker run --engine nats``) ensures it
before it reports ready; every cloud worker ensures it again when it connects
(:mod:`cloud.health.jetstream`), for a cluster run without our responders.
Both idempotent; the first one wins.
"""

from __future__ import annotations

from typing import Any

import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from protocol.topics import PREFIX

__all__ = ["HEALTH_STREAM", "HEALTH_SUBJECT", "ensure_health_stream", "health_stream_config"]

HEALTH_STREAM = "ENTITLE_HEALTH"
HEALTH_SUBJECT = f"{PREFIX.replace('/', '.')}.dev.*.health"


def health_stream_config(replicas: int) -> StreamConfig:
    """Work-queue retention (a report is gone once a worker acked it), file storage,
    ``replicas`` copies (1-3: one per node of a cluster of up to three)."""
    return StreamConfig(
        name=HEALTH_STREAM,
        subjects=[HEALTH_SUBJECT],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
    )


async def ensure_health_stream(js: Any, *, replicas: int) -> bool:
    """Make the stream unless it exists (``js``: a nats-py JetStream context); True when
    this call made it.

    Raises:
        nats.errors.Error, TimeoutError: JetStream did not answer (not up yet).
    """
    try:
        await js.stream_info(HEALTH_STREAM)
        return False
    except nats.js.errors.NotFoundError:
        pass
    try:
        await js.add_stream(health_stream_config(replicas))
    except nats.js.errors.BadRequestError:  # another made it meanwhile (its replicas)
        await js.stream_info(HEALTH_STREAM)
        return False
    return True
