"""The actors that benchmark worker processes run: ``python -m broker.worker benchmarks.workerapp``.

Configured by the environment: ``BENCH_BROKER`` (kafka, redis or rabbitmq), ``BENCH_QUEUE``,
``BENCH_PARTITIONS``, the cluster's ``KAFKA_*`` settings, and ``BENCH_PROBE_DIR``, where the
process's :mod:`benchmarks.probe` reports.
"""

import os
import time

import dramatiq

from benchmarks.brokers import broker_from_env
from benchmarks.probe import process_probe

broker = broker_from_env()
dramatiq.set_broker(broker)

#: This process's count of runs, reported to ``BENCH_PROBE_DIR``.
PROBE = process_probe()

QUEUE = os.environ.get("BENCH_QUEUE", "bench")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop(n):
    """Does nothing; counted."""
    PROBE.hit()


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def stamp(sent_at):
    """Notes the time from its enqueue (``sent_at``, epoch s) to its start, in ms."""
    PROBE.hit((time.time() - sent_at) * 1000)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def late(eta_ms):
    """Notes how late it started against ``eta_ms``, the eta of its delay, in ms.

    The eta travels as an argument: Dramatiq's worker drops ``options["eta"]`` when a due message
    moves from the delay queue to its queue.
    """
    PROBE.hit(time.time() * 1000 - eta_ms)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def warm():
    """A message that shows the worker consumes; not counted."""
