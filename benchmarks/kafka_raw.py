"""The bare confluent-kafka client, with no framework: the limit of what the client can do here."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from broker.consumer import poll_batch


def create_topic(bootstrap_servers: str, topic: str, *, partitions: int) -> None:
    """Creates a topic and waits until every partition has a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
        if (
            metadata
            and not metadata.error
            and len(metadata.partitions) == partitions
            and all(p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        time.sleep(0.05)
    raise KafkaException(f"topic {topic} has no leaders after 30 s")


def idempotent_producer(bootstrap_servers: str, **config) -> Producer:
    """Returns an idempotent (``acks=all``) producer, as KafkaBroker's, with ``linger.ms=1``."""
    return Producer({"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 1, **config})


def produce_all(producer: Producer, topic: str, values: list[bytes]) -> None:
    """Produces every value and waits until all are acknowledged (one flush at the end)."""
    for value in values:
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.005)
        producer.poll(0)
    if producer.flush(60):
        raise KafkaException("records were not acknowledged within 60 s")


def produce_confirmed(producer: Producer, topic: str, value: bytes) -> None:
    """Produces one value and waits for its acknowledgement (a flush per record)."""
    producer.produce(topic, value)
    if producer.flush(10):
        raise KafkaException("a record was not acknowledged within 10 s")


def consume_all(
    bootstrap_servers: str, topic: str, group: str, count: int, *, timeout: float
) -> tuple[int, float, float]:
    """Reads ``count`` records with a plain consumer (auto-commit on).

    Returns:
      ``(records, first, last)``: the records read after the first batch, and the times (epoch s)
      the first and the last batch arrived, so ``records / (last - first)`` is the rate.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    consumer.subscribe([topic])
    read, after_first, first, last = 0, 0, 0.0, 0.0
    deadline = time.monotonic() + timeout
    try:
        while read < count and time.monotonic() < deadline:
            polled: list = []
            poll_batch(consumer, 1_000, 0.5, polled.extend)
            records = [r for r in polled if r.error() is None]
            if not records:
                continue
            now = time.time()
            if read == 0:
                first = now
            else:
                after_first += len(records)
            read += len(records)
            last = now
    finally:
        consumer.close()
    return after_first, first, last
