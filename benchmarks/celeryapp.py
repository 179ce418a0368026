"""The Celery baselines: Celery 5 over kombu's ``confluentkafka`` transport on the same Kafka,
and over Redis and RabbitMQ, the two setups most Celery users run.

``celery -A benchmarks.celeryapp worker`` reads ``BENCH_CELERY_BROKER`` (a
``confluentkafka://host:port``, ``redis://`` or ``amqp://`` URL), ``BENCH_QUEUE`` and
``BENCH_PROBE_DIR``.  Settings are Celery's defaults, except that nothing is sent besides tasks
(no events, heartbeats or gossip).
"""

import os
import time

from celery import Celery

from benchmarks.probe import process_probe

#: Celery's settings in each variant measured.  Kombu's virtual transports sleep
#: ``polling_interval`` (1 s) whenever a poll finds nothing to take, which includes every time the
#: prefetch is full: with defaults a worker runs ``prefetch`` tasks a second.  Any tuned deployment
#: lowers it, so that is the baseline the targets are held against.
VARIANTS = {
    "tuned": {"broker_transport_options": {"polling_interval": 0.01}},
    "defaults": {},
}


def make_app(broker_url: str, variant: str = "tuned") -> Celery:
    """Returns a Celery app on the given broker, with the no-op task ``bench.noop``."""
    app = Celery("bench", broker=broker_url)
    app.conf.update(VARIANTS[variant])
    app.conf.update(
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


app = make_app(
    os.environ.get("BENCH_CELERY_BROKER", "confluentkafka://127.0.0.1:9092"),
    os.environ.get("BENCH_CELERY_VARIANT", "tuned"),
)

#: This process's count of runs, reported to ``BENCH_PROBE_DIR``.
PROBE = process_probe() if os.environ.get("BENCH_PROBE_DIR") else None


def send_many(app: Celery, queue: str, count: int) -> None:
    """Sends ``count`` no-op tasks quickly: the setup of a throughput run.  On Kafka, kombu's flush
    after every message (which the enqueue scenario measures) is skipped, with one flush at the end.
    """
    if not app.conf.broker_url.startswith("confluentkafka"):
        with app.connection_for_write() as connection:
            publisher = app.amqp.Producer(connection)
            for n in range(count):
                app.send_task("bench.noop", args=(n,), queue=queue, producer=publisher)
        return
    from kombu.transport import confluentkafka
    from kombu.utils.encoding import str_to_bytes
    from kombu.utils.json import dumps

    producers = []

    def put(channel, queue, message, **kwargs):
        producer = channel._get_producer(queue)
        while True:
            try:
                producer.produce(channel.sanitize_queue_name(queue), str_to_bytes(dumps(message)))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        producers.append(producer)

    original = confluentkafka.Channel._put
    confluentkafka.Channel._put = put
    try:
        with app.connection_for_write() as connection:
            publisher = app.amqp.Producer(connection)
            for n in range(count):
                app.send_task("bench.noop", args=(n,), queue=queue, producer=publisher)
            for producer in set(producers):
                producer.flush(60)
    finally:
        confluentkafka.Channel._put = original


@app.task(name="bench.noop")
def noop(n):
    """Does nothing; counted."""
    if PROBE is not None:
        PROBE.hit(time.time())


@app.task(name="bench.stamp")
def stamp(sent_at):
    """Notes how long ago (ms) it was sent."""
    if PROBE is not None:
        PROBE.hit((time.time() - sent_at) * 1000)


@app.task(name="bench.warm")
def warm():
    """Counted, with no sample: tells that the worker consumes."""
    if PROBE is not None:
        PROBE.hit()
