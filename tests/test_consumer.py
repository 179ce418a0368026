"""KafkaConsumer on a real Kafka: what gets committed when acks come out of order."""

from __future__ import annotations

import threading

import dramatiq
import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, OffsetSpec, ResourceType
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import ConnectionClosed

from broker import DeliveryFailed, KafkaBroker
from broker.consumer import DUE_FETCH_WAIT_MS, FIRST_FETCH_WAIT_MS, DelayConsumer, KafkaConsumer
from broker.followups import FOLLOW_UPS
from broker.producer import Record
from tests.eventually import eventually


@pytest.fixture
def one_partition_broker(kafka):
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=0)
    yield broker
    broker.close()


def fill(broker: KafkaBroker, queue_name: str, count: int) -> None:
    broker.declare_queue(queue_name)
    broker.enqueue_many(
        [
            dramatiq.Message(queue_name=queue_name, actor_name="a", args=(n,), kwargs={}, options={})
            for n in range(count)
        ]
    )


def take(consumer, count: int, timeout: float = 30, *, ack: bool = False) -> list:
    """Takes ``count`` messages from a consumer (acking each, with ``ack``), failing if they don't come."""
    proxies = []

    def taken() -> bool:
        proxy = next(consumer)
        if proxy is not None:
            proxies.append(proxy)
            if ack:
                consumer.ack(proxy)
        return len(proxies) >= count

    eventually(taken, timeout=timeout, interval=0, what=f"{count} messages", progress=lambda: len(proxies))
    return proxies


def committed_offset(broker: KafkaBroker, queue_name: str) -> int | None:
    [offset] = broker.committed(queue_name, [TopicPartition(queue_name, 0)], timeout=10).values()
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


@pytest.fixture
def handed_out(one_partition_broker, queue_name):
    """A consumer of a one-message queue, and that message, handed out; closed after the test."""
    fill(one_partition_broker, queue_name, 1)
    consumer = one_partition_broker.consume(queue_name, prefetch=2, timeout=50)
    try:
        [proxy] = take(consumer, 1)
        yield consumer, proxy
    finally:
        consumer.close()


def test_nack_dead_letters_then_commits(one_partition_broker, queue_name, handed_out):
    consumer, proxy = handed_out
    proxy.fail()
    consumer.nack(proxy)
    pump(consumer)
    assert committed_offset(one_partition_broker, queue_name) == 1
    assert [m.message_id for m in one_partition_broker.dead_letters] == [proxy.message_id]


def test_a_delay_consumer_fetches_within_a_short_wait_so_due_messages_are_not_held_back():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    assert DelayConsumer.client_config(broker, "q.DQ")["fetch.wait.max.ms"] == DUE_FETCH_WAIT_MS
    # A queue's consumer waits longer, but not librdkafka's 500 ms, which delayed a new queue's first message
    assert KafkaConsumer.client_config(broker, "q")["fetch.wait.max.ms"] == FIRST_FETCH_WAIT_MS


def test_consumer_config_given_to_the_broker_overrides_the_delay_consumers_fetch_wait():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", consumer_config={"fetch.wait.max.ms": 200})
    assert DelayConsumer.client_config(broker, "q.DQ")["fetch.wait.max.ms"] == 200


def in_worker_thread(function, *args) -> None:
    """Calls ``function`` in another thread, as Dramatiq's worker threads ack and nack; re-raises."""
    raised = []

    def run():
        try:
            function(*args)
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if raised:
        raise raised[0]


def refuse_records(broker: KafkaBroker, topic: str, refuse: bool = True) -> None:
    """Makes Kafka refuse every record written to ``topic`` (too large), or accept them again."""
    set_max_message_bytes(broker, topic, 16 if refuse else None)


def set_max_message_bytes(broker: KafkaBroker, topic: str, limit: int | None) -> None:
    """Sets a topic's ``max.message.bytes`` (``None``: back to the broker's default)."""
    entry = (
        ConfigEntry("max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET)
        if limit is not None
        else ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in broker.admin.incremental_alter_configs([resource]).values():
        future.result(10)

    # The change is committed before the broker applies it: wait until it describes it.
    def applied() -> bool:
        [described] = broker.admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
        return (described.result(10)["max.message.bytes"].value == str(limit)) == (limit is not None)

    eventually(applied, timeout=10, interval=0.05, what=f"the broker to apply max.message.bytes to {topic}")


def test_a_nack_whose_dead_letter_kafka_refuses_raises_and_commits_nothing(
    one_partition_broker, queue_name, handed_out
):
    # Given a failed message, and a dead-letter topic that refuses records
    consumer, proxy = handed_out
    proxy.fail()
    refuse_records(one_partition_broker, xq_name(queue_name))
    # When a worker thread nacks it, then it raises what makes Dramatiq's worker try again
    with pytest.raises(ConnectionClosed):
        in_worker_thread(consumer.nack, proxy)
    pump(consumer)
    assert committed_offset(one_partition_broker, queue_name) is None
    # And once the dead letter is taken, the message is done
    refuse_records(one_partition_broker, xq_name(queue_name), refuse=False)
    in_worker_thread(consumer.nack, proxy)
    pump(consumer)
    assert committed_offset(one_partition_broker, queue_name) == 1


def test_a_nack_on_the_consumer_thread_whose_dead_letter_kafka_refuses_restarts_the_consumer(
    one_partition_broker, queue_name, handed_out
):
    # Given a failed message, and a dead-letter topic that refuses records
    consumer, proxy = handed_out
    proxy.fail()
    refuse_records(one_partition_broker, xq_name(queue_name))
    # When the consumer thread itself nacks it (Dramatiq does, for an unknown actor)
    consumer.nack(proxy)
    # Then it keeps polling, and its next poll asks Dramatiq for a new consumer
    with pytest.raises(ConnectionClosed, match="could not dead-letter"):
        next(consumer)
    # And closing it (as Dramatiq then does) commits nothing
    consumer.close()
    assert committed_offset(one_partition_broker, queue_name) is None


def test_a_message_whose_retry_kafka_refused_is_not_acked_until_the_retry_is_sent(
    one_partition_broker, queue_name, handed_out
):
    # Given a message being processed whose retry Kafka refuses, as Dramatiq's Retries sends it
    consumer, proxy = handed_out
    refuse_records(one_partition_broker, queue_name)
    with FOLLOW_UPS.of(proxy), pytest.raises(DeliveryFailed):
        one_partition_broker.enqueue(proxy)
    # When the worker acks it, then the ack raises what makes the worker try it again
    with pytest.raises(ConnectionClosed):
        in_worker_thread(consumer.ack, proxy)
    pump(consumer)
    assert committed_offset(one_partition_broker, queue_name) is None
    # And once Kafka takes the retry, the ack sends it and the message is done
    refuse_records(one_partition_broker, queue_name, refuse=False)
    in_worker_thread(consumer.ack, proxy)
    [retry] = take(consumer, 1)
    assert retry.message_id == proxy.message_id
    pump(consumer)
    assert committed_offset(one_partition_broker, queue_name) == 1


def test_a_record_whose_dead_letter_kafka_refuses_restarts_the_consumer(kafka, one_partition_broker, queue_name):
    # Given a record that is no message, and a dead-letter topic that refuses records
    one_partition_broker.declare_queue(queue_name)
    consumer = one_partition_broker.consume(queue_name, prefetch=2, timeout=50)  # creates the topics
    refuse_records(one_partition_broker, xq_name(queue_name))
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(queue_name, b"not a message")
    assert producer.flush(10) == 0
    # When the consumer meets it, then it asks Dramatiq for a new consumer, committing nothing
    with pytest.raises(ConnectionClosed, match="could not dead-letter"):
        for _ in range(200):
            assert next(consumer) is None
    consumer.close()
    assert committed_offset(one_partition_broker, queue_name) is None
    # And the new consumer reads the record again, and dead-letters it once Kafka takes it
    refuse_records(one_partition_broker, xq_name(queue_name), refuse=False)
    again = one_partition_broker.consume(queue_name, prefetch=2, timeout=50)
    try:

        def dead_lettered_and_committed():
            assert next(again) is None
            return committed_offset(one_partition_broker, queue_name) == 1

        eventually(dead_lettered_and_committed, interval=0, what="the record dead-lettered and its offset committed")
    finally:
        again.close()


def test_a_delay_partition_held_while_paused_for_backpressure_is_not_resumed_before_its_head_is_due(kafka, queue_name):
    # Given a delay consumer with a small read-ahead, already in its group
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=0, delay_tiers=(0, 60_000))
    broker.declare_queue(queue_name)
    consumer = broker.consume(dq_name(queue_name), prefetch=1, timeout=50)
    consumer.read_ahead = 4
    try:
        pump(consumer)

        # And, in one delay tier, two messages due now, then four due in 3 s
        def message(n):
            return dramatiq.Message(queue_name=queue_name, actor_name="a", args=(n,), kwargs={}, options={})

        broker.enqueue_many([message(0), message(1)], delay=1)
        broker.enqueue_many([message(n) for n in range(2, 6)], delay=3_000)
        # When the first is out and the buffer fills, the partition is paused for backpressure,
        # and then, the buffer draining, the consumer meets the first message not yet due
        [first] = take(consumer, 1)
        pump(consumer)
        consumer.ack(first)
        delivered = [first, *take(consumer, 5, timeout=20, ack=True)]
        # Then every message comes once due, none dropped while the partition was held
        assert sorted(p.args[0] for p in delivered) == list(range(6))
    finally:
        consumer.close()
        broker.close()


def test_a_partition_paused_when_it_left_is_not_paused_when_it_comes_back(kafka, queue_name):
    # Given a consumer whose two partitions are paused (its buffer is full, a message is out)
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=0)
    fill(broker, queue_name, 20)
    first = broker.consume(queue_name, prefetch=1, timeout=50)
    first.read_ahead = 2
    second = None
    try:
        [out] = take(first, 1)
        pump(first)
        # When another consumer joins, takes one of them, and leaves, so that it comes back
        second = broker.consume(queue_name, prefetch=100, timeout=50)
        # (If the partition of the message out moves, the first hands out another meanwhile: kept, to be acked.)
        handed_out = [out]

        def both_assigned() -> bool:
            proxy = next(first)
            if proxy is not None:
                handed_out.append(proxy)
            next(second)
            return bool(first._consumer.assignment() and second._consumer.assignment())

        eventually(both_assigned, timeout=60, interval=0, what="both consumers to own a partition")
        assert len(first._consumer.assignment()) == len(second._consumer.assignment()) == 1
        second.close()
        # Then, once the first acks, every message reaches it, from both partitions
        for proxy in handed_out:
            first.ack(proxy)
        seen = {proxy.message_id for proxy in handed_out}

        def all_seen() -> bool:
            proxy = next(first)
            if proxy is not None:
                seen.add(proxy.message_id)
                first.ack(proxy)
            return len(seen) >= 20

        eventually(all_seen, timeout=60, interval=0, what="all 20 messages", progress=lambda: len(seen))
        assert len(seen) == 20
    finally:
        first.close()
        if second is not None:
            second.close()
        broker.close()


def test_due_messages_whose_move_kafka_refuses_each_run_once_after_it_takes_them(kafka, queue_name, caplog):
    # Given a worker, and five delayed messages that fall due together
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=20, delivery_timeout_ms=2_000)
    runs = []

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def due(n):
        runs.append(n)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        due.send(0)
        broker.join(queue_name, timeout=60_000)
        for n in range(1, 6):
            due.send_with_options(args=(n,), delay=1_500)
        # When their queue refuses records while they fall due, so moving them there fails
        refuse_records(broker, queue_name)
        eventually(
            lambda: "Consumer encountered an unexpected error" in caplog.text,
            timeout=30,
            what="a move to be refused, and Dramatiq to restart the delay consumer",
        )
        refuse_records(broker, queue_name, refuse=False)
        # Then, once Kafka takes them, each runs once: the restarted consumer reads them again, and
        # nothing the old one handed to Dramatiq's delay queue is moved a second time (it hands
        # out only due messages, each moved before the next is handed out)
        broker.join(queue_name, timeout=60_000)
        assert records_in(broker, queue_name) == 6
    finally:
        worker.stop()
        broker.close()
    assert sorted(runs) == [0, 1, 2, 3, 4, 5]


def records_in(broker: KafkaBroker, topic: str) -> int:
    """How many records a topic holds, over all its partitions."""
    partitions = [
        TopicPartition(topic, p) for p in broker.admin.list_topics(topic, timeout=10).topics[topic].partitions
    ]
    ends = broker.admin.list_offsets({tp: OffsetSpec.latest() for tp in partitions})
    starts = broker.admin.list_offsets({tp: OffsetSpec.earliest() for tp in partitions})
    return sum(ends[tp].result(10).offset - starts[tp].result(10).offset for tp in partitions)


def test_a_commit_kafka_reports_failed_is_made_again(one_partition_broker, queue_name, handed_out):
    # Given a finished message whose position was committed asynchronously
    consumer, proxy = handed_out
    consumer.ack(proxy)
    pump(consumer)
    position = proxy._offset + 1
    assert consumer.tracker.to_commit() == {}
    # When librdkafka reports (from inside poll, where it calls on_commit) that this commit failed
    consumer._on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [TopicPartition(queue_name, 0, position)])
    # Then the position is committed again on the next round
    assert consumer.tracker.to_commit() == {(queue_name, 0): position}
    pump(consumer)
    assert consumer.tracker.to_commit() == {}
    assert committed_offset(one_partition_broker, queue_name) == position


def test_an_unreachable_kafka_is_logged_once_not_every_few_hundred_milliseconds(capfd, caplog):
    # Given a consumer, a producer and an admin client of a broker whose Kafka does not answer
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", delivery_timeout_ms=1_000)
    broker.declare_queue("unreachable")
    consumer = KafkaConsumer(broker, "unreachable", ["unreachable"], "unreachable", prefetch=1, timeout=200)
    try:
        # When they try for a few seconds
        for _ in range(15):
            next(consumer)
        with pytest.raises(DeliveryFailed):
            broker.producer.send(Record("unreachable", b"x"))
    finally:
        consumer.close()
        broker.close()
    # Then librdkafka printed nothing itself, and each condition was logged once per client
    assert capfd.readouterr().err.count("Connection refused") == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "broker.kafka"]
    assert lines, "nothing was logged"
    assert len(lines) == len(set(lines)), lines
    assert len(lines) <= 6, lines
