"""A worker module for tests that run `kafka-tasks worker` in real processes.

Configured by the environment: ``KAFKA_BOOTSTRAP_SERVERS``, ``TEST_QUEUE`` (the queue name),
``RECORD_FILE`` (where each run of ``record`` appends ``<n> <pid>``) and ``TASK_SLEEP_MS``; with
``TEST_SHARE_LOCK_MS``, the queue has one partition and is read by a share group with that lock.
"""

import os
import time

import dramatiq

from broker import KafkaBroker

if os.environ.get("TEST_SHARE_LOCK_MS"):
    broker = KafkaBroker(
        partitions=1,
        share_queues={os.environ["TEST_QUEUE"]},
        share_lock_ms=int(os.environ["TEST_SHARE_LOCK_MS"]),
    )
else:
    broker = KafkaBroker(partitions=4)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ.get("TEST_QUEUE", "default"), max_retries=0)
def record(n):
    time.sleep(int(os.environ.get("TASK_SLEEP_MS", "0")) / 1000)
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(f"{n} {os.getpid()}\n")
