"""The Dramatiq brokers compared: KafkaBroker, and StubBroker, RedisBroker and RabbitmqBroker."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import dramatiq

#: The display name of each broker kind.
NAMES = {"stub": "StubBroker", "kafka": "KafkaBroker", "redis": "RedisBroker", "rabbitmq": "RabbitmqBroker"}

#: The server each kind needs, if any.
SERVERS = {"redis": "redis", "rabbitmq": "rabbitmq"}


def make_broker(
    kind: str,
    *,
    bootstrap_servers: str | None = None,
    prefix: str | None = None,
    partitions: int = 4,
    redis_url: str | None = None,
    rabbitmq_url: str | None = None,
    confirm_delivery: bool = True,
    **kafka_options,
) -> dramatiq.Broker:
    """Returns a new broker of a kind, with Dramatiq's default middleware.

    Parameters:
      kind(str): ``stub``, ``kafka``, ``redis`` or ``rabbitmq``.
      prefix(str): The ``KAFKA_PREFIX`` that makes every topic and group of a run new.
      confirm_delivery(bool): RabbitMQ only: whether an enqueue waits for the server's confirmation
        (True, like KafkaBroker, whose enqueue always does).
    """
    if kind == "stub":
        from dramatiq.brokers.stub import StubBroker

        broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    if kind == "kafka":
        from broker import KafkaBroker

        return KafkaBroker(bootstrap_servers=bootstrap_servers, prefix=prefix, partitions=partitions, **kafka_options)
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=redis_url)
    if kind == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=rabbitmq_url, confirm_delivery=confirm_delivery)
    raise ValueError(f"unknown broker kind {kind!r}")


def broker_from_env() -> dramatiq.Broker:
    """Returns the broker a worker process was asked for: ``BENCH_BROKER`` and friends.

    ``BENCH_CONSUMER_CONFIG`` (JSON) passes librdkafka settings to KafkaBroker's consumers, for
    experiments such as ``{"fetch.wait.max.ms": 50}``; with ``BENCH_SHARE``, the queue is read by a
    share group.
    """
    kind = os.environ.get("BENCH_BROKER", "kafka")
    extra = {}
    if kind == "kafka" and os.environ.get("BENCH_CONSUMER_CONFIG"):
        extra["consumer_config"] = json.loads(os.environ["BENCH_CONSUMER_CONFIG"])
    if kind == "kafka" and os.environ.get("BENCH_SHARE"):
        extra["share_queues"] = {os.environ["BENCH_QUEUE"]}
    return make_broker(
        kind,
        partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
        redis_url=os.environ.get("BENCH_REDIS_URL"),
        rabbitmq_url=os.environ.get("BENCH_RABBITMQ_URL"),
        **extra,
    )


def enqueue_all(
    broker: dramatiq.Broker, messages: list, *, delay: int | None = None, chunk: int = 2_000, threads: int = 1
) -> None:
    """Enqueues messages as fast as the broker allows: in bulk on Kafka, one by one elsewhere,
    from ``threads`` threads at once (the set-up of a measurement, not the measurement).
    """
    bulk = hasattr(broker, "enqueue_many")
    chunks = [messages[start : start + chunk] for start in range(0, len(messages), chunk)]

    def send(part):
        if bulk:
            broker.enqueue_many(part, delay=delay)
        else:
            for message in part:
                broker.enqueue(message, delay=delay)

    if threads == 1:
        for part in chunks:
            send(part)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(send, part) for part in chunks]:
            future.result()


def join(broker: dramatiq.Broker, queue_name: str, timeout_ms: int) -> None:
    """Waits until a queue is empty, on any of the brokers."""
    if type(broker).__name__ == "StubBroker":
        broker.join(queue_name, timeout=timeout_ms)
    elif type(broker).__name__ == "RabbitmqBroker":
        broker.join(queue_name, min_successes=3, idle_time=50, timeout=timeout_ms)
    elif type(broker).__name__ == "RedisBroker":
        broker.join(queue_name, interval=20, timeout=timeout_ms)
    else:
        broker.join(queue_name, timeout=timeout_ms, fail_fast=False)
