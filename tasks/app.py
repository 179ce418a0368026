"""The reference system's broker: Kafka, with results, the current message and task statuses.

Importing this module touches no network: every Kafka client is created lazily in the process
that uses it (after a fork, in gunicorn and worker processes).  ``KAFKA_TASKS_BROKER=stub`` swaps
in Dramatiq's ``StubBroker``, for testing actor logic without Kafka.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries
from dramatiq.results import Results

from .status import TaskStatus

#: How long a result is kept (ms): Dramatiq's default.
RESULT_TTL_MS = 600_000

#: How long a send may wait for Kafka's acknowledgement (ms).  Under the gateway's promise of a
#: 503 within 5 s when Kafka is down, with room for the request around it.
DELIVERY_TIMEOUT_MS = int(os.environ.get("KAFKA_DELIVERY_TIMEOUT_MS", "4000"))


def build():
    """Returns ``(broker, result_backend)`` as the environment asks."""
    if os.environ.get("KAFKA_TASKS_BROKER") == "stub":
        from dramatiq.brokers.stub import StubBroker
        from dramatiq.results.backends import StubBackend

        broker, backend = StubBroker(), StubBackend()
        broker.add_middleware(Results(backend=backend, result_ttl=RESULT_TTL_MS))
    else:
        from broker import KafkaBroker, KafkaResultBackend, ReplyRouting

        broker = KafkaBroker(delivery_timeout_ms=DELIVERY_TIMEOUT_MS)
        backend = KafkaResultBackend(result_ttl=RESULT_TTL_MS)
        broker.add_middleware(Results(backend=backend, result_ttl=RESULT_TTL_MS))
        broker.add_middleware(ReplyRouting(backend))
    broker.add_middleware(CurrentMessage())
    # Dramatiq runs after_* hooks in reverse order: placed before Retries, TaskStatus sees a
    # message only once Retries has decided whether it fails for good.
    broker.add_middleware(TaskStatus(), before=Retries)
    return broker, backend


broker, backend = build()
dramatiq.set_broker(broker)
