"""Scenario 7, scaling: no-op throughput with 1, 2 and 4 worker processes, by partition count.

``kafka-tasks worker benchmarks.workerapp --processes N --threads 8`` runs on a fresh queue whose
topic has 1, 4 or 8 partitions, read by a classic consumer group; and on one partition read by a
share group (KIP-932), which hands the records of one partition to every process.  Once every
process has joined, messages (each with its own partition key, so they spread over the
partitions) are enqueued, and tasks/s is counted from the first task's start to the last one's,
over all processes.  In a classic group a partition is consumed by one process at a time, so
processes beyond the partition count sit idle; a share group has no such bound.  On a 2-core
machine shared with Kafka, processes beyond two mostly compete for the same cores.
"""

from __future__ import annotations

import time

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from .brokers import enqueue_all
from .context import Context
from .probe import rate
from .rows import row, unavailable
from .workers import WorkerProcess

NAME = "scaling"
TITLE = "7. Scaling: worker processes and partitions"

PROCESSES = (1, 2, 4)

PARTITIONS = (1, 4, 8)


def grid(ctx: Context) -> list[tuple[int, int, bool]]:
    """The (partitions, processes, share group) triples measured: every classic pair, and one
    partition read by a share group, whose processes are not bounded by the partition count."""
    if ctx.smoke:
        return [(4, 1, False), (1, 2, False), (1, 2, True)]
    classic = [
        (partitions, processes, False)
        for partitions in PARTITIONS
        for processes in PROCESSES
        if not (partitions == 8 and processes < 4)
    ]
    return classic + [(1, processes, True) for processes in PROCESSES]


def case(partitions: int, share: bool) -> str:
    """The row's case: the queue's topic, and how it is read."""
    return f"{partitions} partition{'s' if partitions > 1 else ''}" + (", share group" if share else "")


def run(ctx: Context) -> list[dict]:
    measured: dict[tuple[int, int, bool], list[float]] = {}
    failed: dict[tuple[int, int, bool], str] = {}
    for _ in range(ctx.run_count):
        for partitions, processes, share in grid(ctx):
            try:
                value = measure(ctx, partitions, processes, share=share)
            except RuntimeError as e:
                if not share:
                    raise
                # A share group is a preview (its client too): a run that stalls is reported, and
                # the classic rows stand.
                failed.setdefault((partitions, processes, share), str(e))
                continue
            measured.setdefault((partitions, processes, share), []).append(value)
    rows = []
    for key in grid(ctx):
        partitions, processes, share = key
        metric = f"{processes} process{'es' if processes > 1 else ''}"
        note = "8 threads per process" + (", one partition shared by every process" if share else "")
        if key in failed:
            note += f"; {len(measured.get(key, []))} of {ctx.run_count} run(s) finished, another {failed[key]}"
        if measured.get(key):
            rows.append(row(NAME, case(partitions, share), "KafkaBroker", metric, "tasks/s", measured[key], note=note))
        else:
            rows.append(unavailable(NAME, case(partitions, share), "KafkaBroker", note, metric=metric, unit="tasks/s"))
    return rows


def measure(ctx: Context, partitions: int, processes: int, *, share: bool = False) -> float:
    count = ctx.size(20_000, 300)
    with WorkerProcess(ctx, "kafka", processes=processes, partitions=partitions, name="scale", share=share) as worker:
        if share:
            worker.wait_ready()
        else:
            worker.warm_up()
            _wait_for_members(worker, processes, timeout=60)
        noop = worker.actors["noop"]
        messages = [noop.message_with_options(args=(n,), partition_key=n) for n in range(count)]
        enqueue_all(worker.broker, messages, threads=2)
        finished = worker.wait(count, 180)
        report = worker.stop()
    if not finished:
        raise RuntimeError(f"stalled: {processes} process(es) ran {report['count']} of {count} tasks in 180 s")
    return rate(report["count"], report["first"], report["last"])


def _wait_for_members(worker: WorkerProcess, members: int, timeout: float) -> None:
    """Waits until the queue's consumer group is stable with every process in it."""
    admin = AdminClient(worker.broker.settings.client_config())
    group = worker.broker.settings.group(worker.queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        description = admin.describe_consumer_groups([group])[group].result(10)
        if description.state == ConsumerGroupState.STABLE and len(description.members) >= members:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the consumer group did not reach {members} members in {timeout:.0f} s")
