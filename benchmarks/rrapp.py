"""The Redis baseline of the request/response benchmark: ``get_user`` as ``tasks.auth`` has it
(a lookup in the same store), on Dramatiq's RedisBroker with its RedisBackend for results.

Configured by ``BENCH_REDIS_URL``, ``BENCH_QUEUE`` and ``DATABASE_URL``.  The Kafka side of the
benchmark runs the real reference system (``tasks.app:setup_broker``) instead.
"""

import functools
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from tasks.config import database_url
from tasks.store import Store

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL"))
backend = RedisBackend(url=os.environ.get("BENCH_REDIS_URL"))
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ.get("BENCH_QUEUE", "auth"), store_results=True, max_retries=0, priority=0)
def get_user(user_id: int) -> dict | None:
    """Returns the user with this id, or ``None``."""
    return _store().get_user(int(user_id))


@functools.cache
def _store() -> Store:
    return Store(database_url(os.environ.get("DATABASE_URL")))
