"""KafkaBroker on a real Kafka: enqueue, consume, retries, delays and dead letters."""

from __future__ import annotations

import json
import time

import dramatiq
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, ResourceType
from dramatiq.common import current_millis
from dramatiq.errors import QueueJoinTimeout, QueueNotFound

from broker import PARTITION_KEY, DeadLetterInfo, DeliveryFailed, KafkaBroker, MissingTopics
from broker.broker import DEFAULT_MAX_MESSAGE_BYTES, MAX_TRACEBACK_CHARS
from tests.eventually import eventually


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list:
    """Reads ``count`` records of a topic from the beginning."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records = []

    def read() -> bool:
        record = consumer.poll(0.2)
        if record is not None and record.error() is None:
            records.append(record)
        return len(records) >= count

    try:
        eventually(read, timeout=timeout, interval=0, what=f"{count} records of {topic}", progress=lambda: len(records))
    finally:
        consumer.close()
    return records


def committed(broker: KafkaBroker, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    partitions = [
        TopicPartition(topic, p) for p in broker.admin.list_topics(topic, timeout=10).topics[topic].partitions
    ]
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    result = next(iter(broker.admin.list_consumer_group_offsets(request).values())).result(10)
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def test_declaring_an_actor_touches_no_network():
    # Given a broker pointed at a port where nothing listens
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1")
    # When an actor is declared
    dramatiq.actor(lambda: None, actor_name="offline", queue_name="offline", broker=broker)
    # Then the queue is declared, with its delay queue, and no Kafka client was made
    assert (broker._producer, broker._admin) == (None, None)
    assert broker.get_declared_queues() == {"offline"}
    assert broker.get_declared_delay_queues() == {"offline.DQ"}


def test_enqueue_fails_clearly_when_kafka_is_unreachable():
    broker = KafkaBroker(bootstrap_servers="127.0.0.1:1", delivery_timeout_ms=500)
    broker.declare_queue("nowhere")
    with pytest.raises(DeliveryFailed, match="nowhere"):
        broker.enqueue(dramatiq.Message(queue_name="nowhere", actor_name="a", args=(), kwargs={}, options={}))


def test_enqueue_to_an_undeclared_queue_raises(kafka_broker):
    with pytest.raises(QueueNotFound):
        kafka_broker.enqueue(dramatiq.Message(queue_name="undeclared", actor_name="a", args=(), kwargs={}, options={}))


def test_messages_run_and_join_waits_for_them(kafka_broker, worker, queue_name):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def remember(n):
        seen.append(n)

    worker.queues = None
    for n in range(50):
        remember.send(n)
    kafka_broker.join(queue_name, timeout=30_000)
    assert sorted(seen) == list(range(50))


def test_enqueue_many_sends_a_batch_with_one_confirmation(kafka_broker, worker, queue_name):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def remember(n):
        seen.append(n)

    kafka_broker.enqueue_many([remember.message(n) for n in range(200)])
    kafka_broker.join(queue_name, timeout=30_000)
    assert sorted(seen) == list(range(200))


def test_partition_key_keeps_one_keys_messages_in_order_in_one_partition(kafka_broker, queue_name):
    # Given messages of two keys, interleaved
    kafka_broker.declare_queue(queue_name)
    messages = [
        dramatiq.Message(queue_name=queue_name, actor_name="a", args=(key, n), kwargs={}, options={PARTITION_KEY: key})
        for n in range(40)
        for key in ("alice", "bob")
    ]
    kafka_broker.enqueue_many(messages)
    # When they are consumed
    consumer = kafka_broker.consume(queue_name, prefetch=100, timeout=200)
    received = []

    def all_received() -> bool:
        proxy = next(consumer)
        if proxy is not None:
            received.append(proxy)
        return len(received) >= 80

    eventually(all_received, timeout=30, interval=0, what="80 messages", progress=lambda: len(received))
    consumer.close()
    # Then each key's messages share a partition and come in the order they were sent
    for key in ("alice", "bob"):
        mine = [p for p in received if p.args[0] == key]
        assert [p.args[1] for p in mine] == list(range(40))
        assert len({p.kafka_position[1] for p in mine}) == 1


def test_join_times_out_when_nothing_consumes(kafka_broker, queue_name):
    kafka_broker.declare_queue(queue_name)
    kafka_broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={}))
    with pytest.raises(QueueJoinTimeout):
        kafka_broker.join(queue_name, timeout=500)


def test_flush_drops_pending_messages(kafka_broker, queue_name):
    kafka_broker.declare_queue(queue_name)
    kafka_broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={}))
    kafka_broker.enqueue(
        dramatiq.Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={}), delay=60_000
    )
    kafka_broker.flush_all()
    # join returns at once: nothing is left for the queue's consumer groups
    kafka_broker.join(queue_name, timeout=5_000)


def test_retries_run_through_the_delay_topics_until_success(kafka_broker, worker, queue_name):
    attempts = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=5, min_backoff=50, max_backoff=200)
    def flaky():
        attempts.append(current_millis())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    flaky.send()
    kafka_broker.join(queue_name, timeout=30_000)
    assert len(attempts) == 3
    assert kafka_broker.dead_letters == []


def test_a_message_that_always_fails_ends_in_the_dead_letter_topic(kafka, kafka_broker, worker, queue_name):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=2, min_backoff=20, max_backoff=50)
    def doomed():
        raise ValueError("card declined")

    message = doomed.send()
    with pytest.raises(ValueError, match="card declined"):
        kafka_broker.join(queue_name, timeout=30_000)
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    info = DeadLetterInfo.from_headers(letter.headers())
    assert dramatiq.Message.decode(letter.value()).message_id == message.message_id
    assert info.exception_type == "ValueError"
    assert info.exception_message == "card declined"
    assert info.retries == 3  # Dramatiq's count of failed attempts: the first and two retries
    assert info.topic == queue_name


def test_a_failure_with_a_huge_message_is_still_retried_and_dead_lettered(kafka, kafka_broker, worker, queue_name):
    # Given an actor whose exception's message is larger than Kafka takes (Retries copies it into
    # the message's traceback option)
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=1, min_backoff=20, max_backoff=50)
    def verbose():
        raise ValueError("x" * 2_000_000)

    message = verbose.send()
    # When it fails for good, then its retry and its dead letter are in Kafka, the traceback cut
    with pytest.raises(ValueError):
        kafka_broker.join(queue_name, timeout=30_000)
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    dead = dramatiq.Message.decode(letter.value())
    assert dead.message_id == message.message_id
    assert dead.options["retries"] == 2
    assert len(dead.options["traceback"]) == MAX_TRACEBACK_CHARS + 1
    assert dead.options["traceback"].rstrip().endswith("x" * 100)


def test_a_message_near_the_size_limit_is_retried_with_as_much_of_its_traceback_as_fits(
    kafka, kafka_broker, worker, queue_name
):
    runs = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=1, min_backoff=10, max_backoff=10)
    def big(payload):
        runs.append(len(payload))
        if len(runs) == 1:
            raise ValueError("x" * 100 + "\u00e9" * (2 * MAX_TRACEBACK_CHARS))  # 6 bytes a character in JSON

    # Given a message 30 KB under what a consumer reads, whose first run fails
    payload = "x" * (DEFAULT_MAX_MESSAGE_BYTES - 30_000)
    big.send(payload)
    # When it is retried, then Kafka takes the retry, with the end of the traceback
    kafka_broker.join(queue_name, timeout=60_000)
    assert runs == [len(payload)] * 2
    tier = kafka_broker.tiers.for_delay(10).topic(f"{queue_name}.DQ")
    [retry] = read_topic(kafka, kafka_broker.settings.topic(tier), 1)
    traceback = dramatiq.Message.decode(retry.value()).options["traceback"]
    assert traceback.startswith("\u2026") and traceback.rstrip().endswith("\u00e9" * 100)
    assert len(retry.value()) <= DEFAULT_MAX_MESSAGE_BYTES


def test_join_without_fail_fast_does_not_raise(kafka_broker, worker, queue_name):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=0)
    def doomed():
        raise ValueError("nope")

    doomed.send()
    kafka_broker.join(queue_name, timeout=30_000, fail_fast=False)
    assert [m.actor_name for m in kafka_broker.dead_letters] == ["doomed"]


def test_delayed_messages_arrive_after_their_eta(kafka):
    # Given small tiers, so short and long tiers and hops between them are all exercised quickly
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=20, delay_tiers=(0, 50, 200, 1000))
    queue_name = f"delays_{time.monotonic_ns()}"
    lateness = {}

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def due(delay, eta):
        lateness[delay] = current_millis() - eta

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        delays = [1, 30, 120, 450, 1300, 2600, 4100]
        for delay in delays:
            due.send_with_options(args=(delay, current_millis() + delay), delay=delay)
        broker.join(queue_name, timeout=60_000)
    finally:
        worker.stop()
        broker.close()
    # Then every message ran, none before its eta.  How late they run is measured by make bench
    # (scenario 6), not asserted here: the first ones also wait for the consumer group to form.
    assert sorted(lateness) == delays
    assert all(late >= 0 for late in lateness.values()), lateness


def test_a_poison_record_is_dead_lettered_and_the_queue_keeps_flowing(kafka, kafka_broker, worker, queue_name):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def remember(n):
        seen.append(n)

    remember.send(1)  # creates the topics
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(queue_name, b"\xff not json")
    unknown = dramatiq.Message(queue_name=queue_name, actor_name="no_such_actor", args=(), kwargs={}, options={})
    producer.produce(queue_name, unknown.encode())
    producer.flush(10)
    remember.send(2)
    kafka_broker.join(queue_name, timeout=30_000, fail_fast=False)
    assert sorted(seen) == [1, 2]
    reasons = sorted(DeadLetterInfo.from_headers(r.headers()).reason for r in read_topic(kafka, f"{queue_name}.XQ", 2))
    assert reasons[0].startswith("ActorNotFound")
    assert reasons[1].startswith("undecodable message")


def test_records_that_decode_but_cannot_run_are_dead_lettered_and_the_queue_keeps_flowing(
    kafka, kafka_broker, worker, queue_name
):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def remember(n):
        seen.append(n)

    remember.send(1)  # creates the topics
    valid = json.loads(remember.message(0).encode())
    producer = Producer({"bootstrap.servers": kafka})
    for changes in ({"queue_name": "another_queue"}, {"options": None}, {"args": [1, 2]}):
        producer.produce(queue_name, json.dumps({**valid, **changes}).encode())
    producer.flush(10)
    remember.send(2)
    # join() returns once every record is committed: a frozen partition would time it out
    kafka_broker.join(queue_name, timeout=30_000, fail_fast=False)
    assert sorted(seen) == [1, 2]
    reasons = sorted(DeadLetterInfo.from_headers(r.headers()).reason for r in read_topic(kafka, f"{queue_name}.XQ", 3))
    assert reasons == [
        f"a message of queue 'another_queue' on a topic of queue '{queue_name}'",
        "arguments that actor remember cannot take: too many positional arguments",
        "malformed message: options is null",
    ]


def test_a_pipelines_next_message_that_kafka_refused_is_sent_before_the_first_is_done(
    kafka, kafka_broker, worker, queue_name, caplog
):
    from tests.test_consumer import refuse_records

    runs = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def first(n):
        runs.append(("first", n))
        return n + 1

    @dramatiq.actor(queue_name=f"{queue_name}_next", broker=kafka_broker)
    def second(n):
        runs.append(("second", n))

    first.send(0)  # creates the topics
    second.send(0)
    kafka_broker.join(queue_name, timeout=60_000)
    kafka_broker.join(f"{queue_name}_next", timeout=60_000)
    runs.clear()
    # Given the next step's queue refusing records
    refuse_records(kafka_broker, f"{queue_name}_next")
    # When a pipeline's first step runs, and Dramatiq's Pipelines middleware sends the next step
    dramatiq.pipeline([first.message(1), second.message()], broker=kafka_broker).run()
    eventually(
        lambda: "Failed to post_process_message" in caplog.text,
        timeout=30,
        what="the first step's ack to be refused and tried again",
    )
    # Then the first step is not done (its offset is not committed) while Kafka refuses the next
    assert runs == [("first", 1)]
    assert sum(committed(kafka_broker, queue_name, queue_name).values()) == 1  # the set-up message only
    # And once Kafka takes it, the next step runs, and both queues are committed
    refuse_records(kafka_broker, f"{queue_name}_next", refuse=False)
    kafka_broker.join(f"{queue_name}_next", timeout=60_000)
    kafka_broker.join(queue_name, timeout=60_000)
    assert runs == [("first", 1), ("second", 2)]


def test_ensure_topics_names_the_topics_the_cluster_refuses_to_create(kafka, queue_name):
    # A single-node cluster cannot hold three replicas, so creation is refused
    broker = KafkaBroker(bootstrap_servers=kafka, replication_factor=3)
    broker.declare_queue(queue_name)
    with pytest.raises(MissingTopics) as missing:
        broker.ensure_topics()
    assert queue_name in missing.value.topics
    assert f"{queue_name}.XQ" in missing.value.topics
    assert queue_name in str(missing.value)


def test_ensure_topics_applies_the_prefix_and_retention(kafka, queue_name):
    broker = KafkaBroker(bootstrap_servers=kafka, prefix="tenant-1.", retention_ms=3_600_000)
    broker.declare_queue(queue_name)
    created = broker.ensure_topics()
    assert f"tenant-1.{queue_name}" in created
    assert f"tenant-1.{queue_name}.DQ.1s" in created
    assert broker.ensure_topics() == []
    resource = ConfigResource(ResourceType.TOPIC, f"tenant-1.{queue_name}")
    [future] = broker.admin.describe_configs([resource]).values()
    assert future.result(10)["retention.ms"].value == "3600000"


def test_a_task_longer_than_max_poll_interval_runs_once(kafka, queue_name):
    # Given a consumer that must poll at least every 3 s, and a task that takes 5 s
    broker = KafkaBroker(
        bootstrap_servers=kafka,
        partitions=1,
        commit_interval_ms=20,
        consumer_config={"max.poll.interval.ms": 3000, "session.timeout.ms": 3000, "heartbeat.interval.ms": 500},
    )
    runs = []

    @dramatiq.actor(queue_name=queue_name, broker=broker, max_retries=0)
    def slow():
        runs.append(time.monotonic())
        time.sleep(5)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        slow.send()
        broker.join(queue_name, timeout=30_000)
    finally:
        worker.stop()
        broker.close()
    # Then it ran once: polling went on, so the group never evicted the consumer
    assert len(runs) == 1


def test_the_kip_848_consumer_protocol_delivers_too(kafka, queue_name):
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=20, group_protocol="consumer")
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def remember(n):
        seen.append(n)

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        broker.enqueue_many([remember.message(n) for n in range(100)])
        broker.join(queue_name, timeout=60_000)
    finally:
        worker.stop()
        broker.close()
    assert sorted(seen) == list(range(100))
