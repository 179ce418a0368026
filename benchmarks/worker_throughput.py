"""Scenario 1, worker throughput: a no-op actor, one worker process with 1 and with 8 threads.

Messages are enqueued first; then a worker starts, and tasks/s is counted from the first task's
start to the last one's, so a consumer group's join is not part of it.  The Dramatiq brokers run
their worker in this process (as ``dramatiq.Worker``); Celery runs ``celery worker -P threads``
in a child process, on Kafka (kombu's transport), Redis and RabbitMQ.  The raw confluent-kafka
consumer reads the same number of records of the same size with no framework at all: the
client's limit.
"""

from __future__ import annotations

import math
import time

import dramatiq

from .brokers import NAMES, SERVERS, enqueue_all, make_broker
from .celeryworker import NAMES as CELERY_NAMES
from .celeryworker import SERVERS as CELERY_SERVERS
from .celeryworker import CeleryWorker
from .context import Context
from .kafka_raw import consume_all, create_topic, idempotent_producer, produce_all
from .probe import Probe, rate
from .rows import row, unavailable

NAME = "worker_throughput"
TITLE = "1. Worker throughput (no-op actor, one worker process)"

#: Threads per worker process.
THREADS = (1, 8)

#: The Dramatiq brokers, subject first; kafka-ops is the subject with its ops reports on.
DRAMATIQ = ("kafka", "kafka-ops", "stub", "redis", "rabbitmq")

#: Every system measured, in the report's order.
SYSTEMS = (*DRAMATIQ, *CELERY_NAMES, "raw")

#: Display names of the systems that are no Dramatiq broker.
OTHERS = {
    "kafka-ops": "KafkaBroker with ops reports (OpsReporter)",
    **CELERY_NAMES,
    "raw": "confluent-kafka Consumer (raw)",
}

#: How long one measurement may take before it counts as failed (s).
TIMEOUT = 180

#: The longest a worker runs in one measurement (s): slow baselines are counted over this window.
WINDOW = 4.0

#: A worker that starts no task for this long has stalled (s); its rate is counted until then.
STALL = 3.0


def messages(ctx: Context, system: str, threads: int) -> int:
    """Messages per measurement: enough for 1-4 s of work each (Celery is ~100x slower)."""
    full = {
        "kafka": 20_000,
        "kafka-ops": 20_000,
        "stub": 20_000,
        "redis": 5_000,
        "rabbitmq": 8_000,
        "celery": 2_000,
        "celery-defaults": 300,
        "celery-redis": 5_000,
        "celery-rabbitmq": 5_000,
        "raw": 100_000,
    }[system]
    return ctx.size(int(full), {"celery": 50, "celery-defaults": 10, "raw": 2_000}.get(system, 200))


#: The server each system needs besides Kafka.
NEEDS = {**SERVERS, **CELERY_SERVERS}


def run(ctx: Context) -> list[dict]:
    results: dict[tuple[int, str], list[float]] = {}
    notes: dict[tuple[int, str], str] = {}
    for _ in range(ctx.run_count):
        for threads in THREADS:
            for system in SYSTEMS:
                key = (threads, system)
                missing = ctx.missing(NEEDS[system]) if system in NEEDS else None
                if missing:
                    notes[key] = missing
                    continue
                t0 = time.monotonic()
                try:
                    if system in CELERY_NAMES:
                        value = measure_celery(ctx, threads, messages(ctx, system, threads), system)
                    elif system == "raw":
                        value = measure_raw(ctx, messages(ctx, system, threads))
                    else:
                        value = measure_dramatiq(ctx, system, threads, messages(ctx, system, threads))
                except Exception as e:  # A baseline that breaks is reported, not fatal.
                    if system in ("kafka", "kafka-ops", "stub"):
                        raise
                    notes[key] = str(e) if isinstance(e, RuntimeError) else f"failed: {type(e).__name__}: {e}"
                    continue
                results.setdefault(key, []).append(value)
                print(f"    {threads} {system}: {value:,.0f}/s ({time.monotonic() - t0:.1f} s)", flush=True)
    rows = []
    for threads in THREADS:
        case = f"{threads} thread{'s' if threads > 1 else ''}"
        for system in SYSTEMS:
            name = OTHERS.get(system) or NAMES[system]
            values = results.get((threads, system), [])
            note = notes.get((threads, system), "")
            if system == "raw":
                note = note or "one consumer thread, no framework"
            if values and any(not math.isnan(v) for v in values):
                rows.append(row(NAME, case, name, "throughput", "tasks/s", values, note=note))
            else:
                rows.append(
                    unavailable(NAME, case, name, note or "did not finish", metric="throughput", unit="tasks/s")
                )
    return rows


def measure_dramatiq(ctx: Context, kind: str, threads: int, count: int) -> float:
    """Returns tasks/s of one in-process Dramatiq worker on a fresh queue."""
    broker = make_broker(
        "kafka" if kind == "kafka-ops" else kind,
        bootstrap_servers=ctx.bootstrap_servers,
        prefix=ctx.prefix(),
        redis_url=ctx.urls.get("redis"),
        rabbitmq_url=ctx.urls.get("rabbitmq"),
        confirm_delivery=False,
    )
    if kind == "kafka-ops":
        from broker.ops.reporter import OpsReporter

        broker.add_middleware(OpsReporter())
    probe = Probe()

    def noop(n):
        probe.hit()

    actor = dramatiq.actor(noop, broker=broker, queue_name=ctx.queue("noop"), max_retries=0)
    enqueue_all(broker, [actor.message(n) for n in range(count)])
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        started = probe.wait(1, TIMEOUT)
        probe.wait(count, ctx.size(WINDOW, 1.0))
    finally:
        worker.stop()
        broker.close()
    return probe.rate() if started else math.nan


def measure_celery(ctx: Context, threads: int, count: int, key: str) -> float:
    """Returns tasks/s of one ``celery worker -P threads -c <threads>`` process.

    Kombu's Kafka transport runs the last prefetched tasks only when the worker stops (they wait
    behind a 5 s poll); the rate is counted up to that stall, in Celery's favour.
    """
    from .celeryapp import send_many

    worker = CeleryWorker(ctx, key, threads=threads)
    send_many(worker.app, worker.queue, count)
    with worker:
        if not worker.wait(1, TIMEOUT):
            raise RuntimeError(f"Celery ran no task; {worker.tail()}")
        deadline = time.monotonic() + ctx.size(WINDOW, 1.0)
        last_count, last_change = 0, time.monotonic()
        while time.monotonic() < deadline and last_count < count and time.monotonic() - last_change < STALL:
            time.sleep(0.05)
            if worker.progress() != last_count:
                last_count, last_change = worker.progress(), time.monotonic()
        # Its final report counts only the tasks started before the stop, not those run during it.
        result = worker.stop()
    before_stop = sorted(t for t in result["samples"] if t < result["stop requested"])
    return rate(len(before_stop), before_stop[0], before_stop[-1]) if before_stop else math.nan


def measure_raw(ctx: Context, count: int) -> float:
    """Returns records/s of a bare confluent-kafka consumer reading records as big as the tasks."""
    topic = f"{ctx.prefix()}raw"
    create_topic(ctx.bootstrap_servers, topic, partitions=4)
    value = task_sized_record()
    produce_all(idempotent_producer(ctx.bootstrap_servers, **{"linger.ms": 5}), topic, [value] * count)
    records, first, last = consume_all(ctx.bootstrap_servers, topic, f"{topic}-group", count, timeout=TIMEOUT)
    return records / (last - first) if last > first else math.nan


def task_sized_record() -> bytes:
    """Returns a record as big as a no-op task's message."""
    return dramatiq.Message(
        queue_name="noop_0123abcd", actor_name="noop", args=(123456,), kwargs={}, options={}
    ).encode()
