"""Scenario 3, end-to-end latency: from the enqueue call to the actor's start, at fixed rates.

Sender threads in this process enqueue ``stamp(time.time())`` at 100/s and then 1,000/s (open
loop: a late send does not delay the schedule); a worker process with 8 threads notes, at the
actor's start, how long ago its message was enqueued.  The sender and the worker share the
machine's two cores with Kafka.  StubBroker runs its worker in this process: the ceiling.  Celery
5's worker (``-P threads -c 8``) runs the same task on Kafka, Redis and RabbitMQ.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time

import dramatiq

from .brokers import NAMES, SERVERS, join, make_broker
from .celeryworker import NAMES as CELERY_NAMES
from .celeryworker import SERVERS as CELERY_SERVERS
from .celeryworker import CeleryWorker
from .context import Context
from .probe import Probe
from .rows import median_run, percentile, row, unavailable
from .threads import in_threads
from .workers import WorkerProcess

NAME = "latency"
TITLE = "3. End-to-end latency (enqueue to actor start)"

#: Rates (messages/s) and how long each is held in a full run (s).
RATES = ((100, 4.0), (1_000, 2.0))

#: Sender threads: a confirmed send takes a round trip, so one thread could not keep 1,000/s.
SENDERS = 4

SYSTEMS = ("kafka", "stub", "redis", "rabbitmq", "celery", "celery-redis", "celery-rabbitmq")

#: Display names, by key.
DISPLAY = {**NAMES, **CELERY_NAMES}


def run(ctx: Context) -> list[dict]:
    samples: dict[tuple[str, int], list[list[float]]] = {}
    measures = {kind: functools.partial(_measure, ctx, kind) for kind in SYSTEMS}
    measures["stub"] = functools.partial(_measure_stub, ctx)
    for kind in CELERY_NAMES.keys() & set(SYSTEMS):
        measures[kind] = functools.partial(_measure_celery, ctx, kind)
    measured, notes = ctx.measure_in_turn(measures, subject="kafka", servers={**SERVERS, **CELERY_SERVERS})
    for kind, runs in measured.items():
        for by_rate in runs:
            for rate, values in by_rate.items():
                samples.setdefault((kind, rate), []).append(values)
    rows = []
    for rate, _ in RATES:
        case = f"{rate:,}/s"
        for kind in SYSTEMS:
            runs = samples.get((kind, rate))
            if not runs:
                rows.append(
                    unavailable(NAME, case, DISPLAY[kind], notes.get(kind, "not measured"), metric="p50", unit="ms")
                )
                continue
            note = "worker in this process" if kind == "stub" else ""
            rows.append(
                row(
                    NAME,
                    case,
                    DISPLAY[kind],
                    "p50",
                    "ms",
                    [percentile(r, 0.5) for r in runs],
                    better="lower",
                    note=note,
                    samples=median_run(runs),
                )
            )
            rows.append(
                row(NAME, case, DISPLAY[kind], "p99", "ms", [percentile(r, 0.99) for r in runs], better="lower")
            )
            rows.append(row(NAME, case, DISPLAY[kind], "max", "ms", [max(r) for r in runs], better="lower"))
    rows.extend(first_message_rows(ctx))
    return rows


#: The case of a new queue's first message, and how many new queues each run opens.
FIRST, FIRST_QUEUES = "first message of a new queue", 5


def first_message_rows(ctx: Context) -> list[dict]:
    """A worker starts on a queue no one used, and its first message is sent at once: how long from
    the send to the actor's start, and from the worker's start (its topics and group join included).
    KafkaBroker only: the other brokers have no topics to create and no group to join."""
    sends, starts = [], []
    for _ in range(ctx.run_count):
        measured = [_first_message(ctx) for _ in range(ctx.size(FIRST_QUEUES, 1))]
        sends.append(statistics.median(m[0] for m in measured))
        starts.append(statistics.median(m[1] for m in measured))
    return [
        row(NAME, FIRST, NAMES["kafka"], "send to start", "ms", sends, better="lower"),
        row(NAME, FIRST, NAMES["kafka"], "worker start to start", "ms", starts, better="lower"),
    ]


def _first_message(ctx: Context) -> tuple[float, float]:
    broker = make_broker("kafka", bootstrap_servers=ctx.bootstrap_servers, prefix=ctx.prefix())
    started = threading.Event()
    at = {}

    def first():
        at["run"] = time.perf_counter()
        started.set()

    actor = dramatiq.actor(first, broker=broker, queue_name=ctx.queue("first"), max_retries=0)
    worker = dramatiq.Worker(broker, worker_threads=1)
    try:
        at["worker"] = time.perf_counter()
        worker.start()
        at["send"] = time.perf_counter()
        actor.send()
        if not started.wait(60):
            raise RuntimeError("the first message of a new queue did not run within 60 s")
    finally:
        worker.stop()
        broker.close()
    return (at["run"] - at["send"]) * 1000, (at["run"] - at["worker"]) * 1000


def _durations(ctx: Context):
    return [(rate, ctx.size(seconds, 0.5)) for rate, seconds in RATES]


def _measure(ctx: Context, kind: str) -> dict[int, list[float]]:
    """Runs the rates against a worker process; returns each rate's latencies (ms)."""
    result = {}
    with WorkerProcess(ctx, kind, name="latency") as worker:
        worker.warm_up()
        stamp = worker.actors["stamp"]
        expected = 0
        for rate, seconds in _durations(ctx):
            sent = paced(lambda: stamp.send(time.time()), rate, seconds)
            expected += sent
            worker.wait(expected, 60)
            result[rate] = sent
        report = worker.stop()
    return _by_rate(report["samples"], result)


def _measure_celery(ctx: Context, key: str) -> dict[int, list[float]]:
    """Runs the rates against a Celery worker process; returns each rate's latencies (ms)."""
    result = {}
    with CeleryWorker(ctx, key, name="latency") as worker:
        worker.warm_up()
        expected = 1
        for rate, seconds in _durations(ctx):
            # One sender: Celery's producer is not meant to be shared by threads.
            sent = paced(lambda: worker.send("bench.stamp", time.time()), rate, seconds, senders=1)
            expected += sent
            if not worker.wait(expected, ctx.size(60, 15)):
                raise RuntimeError(f"Celery ran {worker.progress() - 1} of {expected - 1} tasks; {worker.tail()}")
            result[rate] = sent
        report = worker.stop()
    return _by_rate(report["samples"], result)


def _measure_stub(ctx: Context) -> dict[int, list[float]]:
    broker = make_broker("stub")
    probe = Probe()

    def stamp(sent_at):
        probe.hit((time.time() - sent_at) * 1000)

    queue = ctx.queue("latency")
    actor = dramatiq.actor(stamp, broker=broker, queue_name=queue, max_retries=0)
    worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    result, expected = {}, 0
    try:
        for rate, seconds in _durations(ctx):
            sent = paced(lambda: actor.send(time.time()), rate, seconds)
            expected += sent
            probe.wait(expected, 60)
            join(broker, queue, 60_000)
            result[rate] = sent
    finally:
        worker.stop()
    return _by_rate(probe.snapshot()["samples"], result)


def _by_rate(samples: list[float], sent: dict[int, int]) -> dict[int, list[float]]:
    """Splits a run's samples, in the order sent, into each rate's: ``sent`` is how many each rate sent."""
    result, start = {}, 0
    for rate, count in sent.items():
        result[rate], start = samples[start : start + count], start + count
    return result


def paced(send, rate: float, seconds: float, senders: int = SENDERS) -> int:
    """Calls ``send()`` ``rate`` times a second for ``seconds``, from ``senders`` threads.

    Returns:
      How many sends were made.
    """
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    counts = [0] * senders

    def sender(i: int) -> None:
        for n in range(i, total, senders):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            send()
            counts[i] += 1

    in_threads(sender, senders)
    return sum(counts)
