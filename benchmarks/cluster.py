"""Scenario 8, cluster: KafkaBroker on three brokers with replication 3 against the single node.

``broker.devkafka.LocalCluster`` (``kafka-tasks kafka --brokers 3``: a KRaft controller and three
brokers on this machine) is started next to the single node every other scenario uses.  On both,
the same three figures are measured: confirmed single sends from one thread, ``enqueue_many`` of
1,000 messages per call, and an in-process worker with 8 threads running no-op tasks.  On the
cluster, every record is written to three brokers and acknowledged once two are in sync
(``acks=all``, ``min.insync.replicas=2``), so the ratio is the price of surviving a broker's loss.
Three brokers and a controller on the same two cores as the workers are a worst case: on real
hardware each broker has its own machine.
"""

from __future__ import annotations

import dataclasses

from broker.devkafka import LocalCluster

from .context import Context
from .enqueue import BATCH, _bulk, _kafka_actor, _single
from .rows import row
from .worker_throughput import measure_dramatiq

NAME = "cluster"
TITLE = "8. A three-broker cluster against the single node"

CLUSTER = "KafkaBroker, 3 brokers (replication 3, min ISR 2)"
SINGLE_NODE = "the same, 1 broker (replication 1)"

SEND, BULK, WORKER = "single sends, 1 thread", f"enqueue_many, {BATCH:,} per call", "no-op worker, 8 threads"


def run(ctx: Context) -> list[dict]:
    measured: dict[tuple[str, str], list[float]] = {}
    cluster = LocalCluster(brokers=3)
    cluster.start()
    try:
        on_cluster = dataclasses.replace(ctx, bootstrap_servers=cluster.bootstrap_servers, kafka_pid=None)
        for _ in range(ctx.run_count):
            for system, where in ((CLUSTER, on_cluster), (SINGLE_NODE, ctx)):
                for case, value in measure(where).items():
                    measured.setdefault((case, system), []).append(value)
    finally:
        cluster.stop()
    return [
        row(NAME, case, system, "throughput", "tasks/s" if case == WORKER else "messages/s", values)
        for (case, system), values in measured.items()
    ]


def measure(ctx: Context) -> dict[str, float]:
    """Returns the three figures on one cluster, by case."""
    seconds = ctx.size(2.0, 0.3)
    broker, actor = _kafka_actor(ctx)
    try:
        sends, _ = _single(actor.send, seconds)
        bulk = _bulk(lambda batch: broker.enqueue_many([actor.message(n) for n in batch]), seconds)
    finally:
        broker.close()
    worker = measure_dramatiq(ctx, "kafka", 8, ctx.size(20_000, 300))
    return {SEND: sends, BULK: bulk, WORKER: worker}
