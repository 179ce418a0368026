"""Scenario 2, enqueue throughput: confirmed single sends and bulk sends.

``KafkaBroker.enqueue`` returns once Kafka acknowledged the record (idempotent producer,
``acks=all``), so a single send costs a round trip; ``enqueue_many`` waits once for a whole batch.
Baselines: the raw idempotent producer doing the same (one flush per record, or one per batch),
Dramatiq's other brokers (RabbitMQ with publisher confirms, so that it also waits), and Celery's
``send_task`` over kombu's Kafka transport (which flushes after every message).
"""

from __future__ import annotations

import statistics
import time

import dramatiq

from .brokers import NAMES, SERVERS, make_broker
from .context import Context
from .kafka_raw import create_topic, idempotent_producer, produce_all, produce_confirmed
from .rows import percentile, row, unavailable
from .threads import in_threads
from .worker_throughput import task_sized_record

NAME = "enqueue"
TITLE = "2. Enqueue throughput"

#: Messages per ``enqueue_many`` call, and per raw flush in the bulk case.
BATCH = 1_000

#: Sender threads in the concurrent case.
THREADS = 8

SINGLE, CONCURRENT, BULK = "single sends, 1 thread", f"single sends, {THREADS} threads", f"bulk, {BATCH:,} per call"

RAW = "confluent-kafka Producer (raw, idempotent)"
CELERY = "Celery 5 send_task on Kafka (kombu)"


def run(ctx: Context) -> list[dict]:
    seconds = ctx.size(2.0, 0.3)
    measured: dict[tuple[str, str], list[float]] = {}
    latencies: dict[tuple[str, str], list[list[float]]] = {}
    notes: dict[tuple[str, str], str] = {}

    def note(case, system, value):
        measured.setdefault((case, system), []).append(value)

    for _ in range(ctx.run_count):
        # KafkaBroker, single, bulk and concurrent.
        broker, actor = _kafka_actor(ctx)
        try:
            rate, lat = _single(lambda n, actor=actor: actor.send(n), seconds)
            note(SINGLE, NAMES["kafka"], rate)
            latencies.setdefault((SINGLE, NAMES["kafka"]), []).append(lat)
            note(CONCURRENT, NAMES["kafka"], _concurrent(lambda n, actor=actor: actor.send(n), seconds, THREADS))
            note(
                BULK,
                NAMES["kafka"],
                _bulk(
                    lambda batch, broker=broker, actor=actor: broker.enqueue_many([actor.message(n) for n in batch]),
                    seconds,
                ),
            )
        finally:
            broker.close()
        # The raw producer, the same three ways.
        topic = f"{ctx.prefix()}raw"
        create_topic(ctx.bootstrap_servers, topic, partitions=4)
        value = task_sized_record()
        producer = idempotent_producer(ctx.bootstrap_servers)
        rate, lat = _single(lambda n, p=producer, t=topic, v=value: produce_confirmed(p, t, v), seconds)
        note(SINGLE, RAW, rate)
        latencies.setdefault((SINGLE, RAW), []).append(lat)
        note(
            CONCURRENT,
            RAW,
            _concurrent(lambda n, p=producer, t=topic, v=value: produce_confirmed(p, t, v), seconds, THREADS),
        )
        note(BULK, RAW, _bulk(lambda batch, p=producer, t=topic, v=value: produce_all(p, t, [v] * len(batch)), seconds))
        # Dramatiq's other brokers and Celery: single sends.
        for kind in ("stub", "redis", "rabbitmq"):
            missing = ctx.missing(SERVERS[kind]) if kind in SERVERS else None
            if missing:
                notes[(SINGLE, NAMES[kind])] = missing
                continue
            try:
                other = make_broker(
                    kind, redis_url=ctx.urls.get("redis"), rabbitmq_url=ctx.urls.get("rabbitmq"), confirm_delivery=True
                )
                other_actor = dramatiq.actor(_noop, broker=other, queue_name=ctx.queue("enqueue"), max_retries=0)
                rate, lat = _single(lambda n, a=other_actor: a.send(n), seconds)
                other.close()
            except Exception as e:
                notes[(SINGLE, NAMES[kind])] = f"failed: {type(e).__name__}: {e}"
                continue
            note(SINGLE, NAMES[kind], rate)
            latencies.setdefault((SINGLE, NAMES[kind]), []).append(lat)
        try:
            rate, lat = _celery_single(ctx, seconds)
            note(SINGLE, CELERY, rate)
            latencies.setdefault((SINGLE, CELERY), []).append(lat)
        except Exception as e:
            notes[(SINGLE, CELERY)] = f"failed: {type(e).__name__}: {e}"

    rows = []
    for case, systems in (
        (SINGLE, [NAMES["kafka"], RAW, NAMES["stub"], NAMES["redis"], NAMES["rabbitmq"], CELERY]),
        (CONCURRENT, [NAMES["kafka"], RAW]),
        (BULK, [NAMES["kafka"], RAW]),
    ):
        for system in systems:
            values = measured.get((case, system))
            note_text = notes.get((case, system), "")
            if system == NAMES["rabbitmq"]:
                note_text = note_text or "publisher confirms on"
            if values:
                rows.append(row(NAME, case, system, "throughput", "messages/s", values, note=note_text))
            else:
                rows.append(
                    unavailable(NAME, case, system, note_text or "not measured", metric="throughput", unit="messages/s")
                )
            if case == SINGLE and (case, system) in latencies:
                runs = latencies[(case, system)]
                rows.append(
                    row(NAME, case, system, "send p50", "ms", [statistics.median(r) for r in runs], better="lower")
                )
                rows.append(
                    row(NAME, case, system, "send p99", "ms", [percentile(r, 0.99) for r in runs], better="lower")
                )
    return rows


def _noop(n):
    pass


def _kafka_actor(ctx: Context):
    broker = make_broker("kafka", bootstrap_servers=ctx.bootstrap_servers, prefix=ctx.prefix())
    actor = dramatiq.actor(_noop, broker=broker, queue_name=ctx.queue("enqueue"), max_retries=0)
    broker.ensure_topics()
    actor.send(0)  # warm up: connection, producer id
    return broker, actor


def _single(send, seconds: float) -> tuple[float, list[float]]:
    """Sends one message at a time for ``seconds``; returns messages/s and each send's ms."""
    send(-1)
    latencies = []
    started = time.perf_counter()
    deadline = started + seconds
    n = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        send(n)
        latencies.append((time.perf_counter() - t0) * 1000)
        n += 1
    return n / (time.perf_counter() - started), latencies


def _concurrent(send, seconds: float, threads: int) -> float:
    """Sends from ``threads`` threads at once for ``seconds``; returns messages/s in all."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def sender(i):
        while time.perf_counter() < deadline:
            send(i)
            counts[i] += 1

    elapsed = in_threads(sender, threads)  # first: the threads fill in the counts
    return sum(counts) / elapsed


def _bulk(send_batch, seconds: float) -> float:
    """Sends batches of ``BATCH`` for ``seconds``; returns messages/s."""
    started = time.perf_counter()
    deadline = started + seconds
    sent = 0
    while time.perf_counter() < deadline:
        send_batch(range(sent, sent + BATCH))
        sent += BATCH
    return sent / (time.perf_counter() - started)


def _celery_single(ctx: Context, seconds: float) -> tuple[float, list[float]]:
    try:
        from .celeryapp import make_app
    except ImportError as e:
        raise RuntimeError(f"Celery is not installed ({e})") from None
    app = make_app(f"confluentkafka://{ctx.bootstrap_servers.split(',')[0]}")
    queue = ctx.queue("celery")
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        return _single(lambda n: app.send_task("bench.noop", args=(n,), queue=queue, producer=producer), seconds)
