"""KafkaConsumer on a real Kafka: what gets committed when acks come out of order."""

from __future__ import annotations

import time

import dramatiq
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from broker import KafkaBroker
from broker.consumer import DUE_FETCH_WAIT_MS, DelayConsumer, KafkaConsumer


@pytest.fixture
def one_partition_broker(kafka):
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=0)
    yield broker
    broker.close()


def fill(broker: KafkaBroker, queue_name: str, count: int) -> None:
    broker.declare_queue(queue_name)
    broker.enqueue_many([
        dramatiq.Message(queue_name=queue_name, actor_name="a", args=(n,), kwargs={}, options={}) for n in range(count)
    ])


def take(consumer, count: int, timeout: float = 30) -> list:
    proxies, deadline = [], time.monotonic() + timeout
    while len(proxies) < count and time.monotonic() < deadline:
        proxy = next(consumer)
        if proxy is not None:
            proxies.append(proxy)
    assert len(proxies) == count, f"got {len(proxies)} of {count} messages"
    return proxies


def committed_offset(broker: KafkaBroker, queue_name: str) -> int | None:
    request = [ConsumerGroupTopicPartitions(queue_name, [TopicPartition(queue_name, 0)])]
    [future] = broker.admin.list_consumer_group_offsets(request).values()
    offset = future.result(10).topic_partitions[0].offset
    return offset if offset >= 0 else None


def pump(consumer, rounds: int = 3) -> None:
    """Lets the consumer thread run its loop, which is where commits happen."""
    for _ in range(rounds):
        assert next(consumer) is None


def test_out_of_order_acks_commit_exactly_the_contiguous_prefix(one_partition_broker, queue_name):
    # Given ten messages handed out by one consumer
    fill(one_partition_broker, queue_name, 10)
    consumer = one_partition_broker.consume(queue_name, prefetch=10, timeout=50)
    proxies = take(consumer, 10)
    try:
        # When they are acked out of order, as worker threads do
        for n in (3, 7, 6, 9, 4):
            consumer.ack(proxies[n])
        pump(consumer)
        # Then nothing is committed while offset 0 is unfinished
        assert committed_offset(one_partition_broker, queue_name) is None
        for n in (0, 1, 2):
            consumer.ack(proxies[n])
        pump(consumer)
        assert committed_offset(one_partition_broker, queue_name) == 5
        consumer.ack(proxies[5])
        pump(consumer)
        assert committed_offset(one_partition_broker, queue_name) == 8
    finally:
        consumer.close()
    # And closing commits no further than the prefix
    assert committed_offset(one_partition_broker, queue_name) == 8


def test_requeue_commits_nothing_and_the_messages_come_back(one_partition_broker, queue_name):
    fill(one_partition_broker, queue_name, 3)
    consumer = one_partition_broker.consume(queue_name, prefetch=10, timeout=50)
    first = take(consumer, 3)
    consumer.requeue(first)
    consumer.close()
    assert committed_offset(one_partition_broker, queue_name) is None
    again = one_partition_broker.consume(queue_name, prefetch=10, timeout=50)
    try:
        assert [p.message_id for p in take(again, 3)] == [p.message_id for p in first]
    finally:
        again.close()


def test_acks_from_an_earlier_consumer_are_ignored(one_partition_broker, queue_name):
    # Given a message handed out by a consumer that has since closed
    fill(one_partition_broker, queue_name, 2)
    old = one_partition_broker.consume(queue_name, prefetch=10, timeout=50)
    stale = take(old, 2)
    old.close()
    # When its ack reaches the consumer that replaced it
    new = one_partition_broker.consume(queue_name, prefetch=10, timeout=50)
    try:
        fresh = take(new, 2)
        new.ack(stale[0])
        new.ack(stale[1])
        pump(new)
        # Then nothing is committed for it
        assert committed_offset(one_partition_broker, queue_name) is None
        new.ack(fresh[0])
        pump(new)
        assert committed_offset(one_partition_broker, queue_name) == 1
    finally:
        new.close()


def test_prefetch_limits_the_messages_handed_out_until_acks_come(one_partition_broker, queue_name):
    fill(one_partition_broker, queue_name, 5)
    consumer = one_partition_broker.consume(queue_name, prefetch=2, timeout=50)
    try:
        first = take(consumer, 2)
        # The partition is paused: polling goes on, but no third message comes
        pump(consumer, rounds=5)
        consumer.ack(first[0])
        [third] = take(consumer, 1)
        assert tuple(third.args) == (2,)
    finally:
        consumer.close()


def test_nack_dead_letters_then_commits(one_partition_broker, queue_name):
    fill(one_partition_broker, queue_name, 1)
    consumer = one_partition_broker.consume(queue_name, prefetch=2, timeout=50)
    try:
        [proxy] = take(consumer, 1)
        proxy.fail()
        consumer.nack(proxy)
        pump(consumer)
        assert committed_offset(one_partition_broker, queue_name) == 1
        assert [m.message_id for m in one_partition_broker.dead_letters] == [proxy.message_id]
    finally:
        consumer.close()


def test_a_delay_consumer_fetches_within_a_short_wait_so_due_messages_are_not_held_back():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    assert DelayConsumer.client_config(broker, "q.DQ")["fetch.wait.max.ms"] == DUE_FETCH_WAIT_MS
    assert "fetch.wait.max.ms" not in KafkaConsumer.client_config(broker, "q")


def test_consumer_config_given_to_the_broker_overrides_the_delay_consumers_fetch_wait():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", consumer_config={"fetch.wait.max.ms": 200})
    assert DelayConsumer.client_config(broker, "q.DQ")["fetch.wait.max.ms"] == 200
