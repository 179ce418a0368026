"""KafkaBroker on a real Kafka: enqueue, consume, retries, delays and dead letters."""

from __future__ import annotations

import json
import math
import threading
import time

import dramatiq
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import ConfigResource, ResourceType
from dramatiq.common import current_millis
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.results import Results

from broker import PARTITION_KEY, DeadLetterInfo, DeliveryFailed, KafkaBroker, MissingTopics
from broker.broker import DEFAULT_MAX_MESSAGE_BYTES, MAX_TRACEBACK_CHARS, AfterActorFailed
from broker.deadletters import DeadLettered
from broker.messages import BadMessage
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
    from confluent_kafka import TopicPartition

    partitions = [
        TopicPartition(topic, p) for p in broker.admin.list_topics(topic, timeout=10).topics[topic].partitions
    ]
    found = broker.committed(group, partitions, timeout=10)
    return {partition: offset for (_, partition), offset in found.items() if offset >= 0}


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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


@pytest.mark.both_modes
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


# Hostile input: options, sizes and etas no middleware can act on ----------------------------


@pytest.mark.parametrize(
    "option, value",
    [
        *(
            (option, value)
            for option in ("min_backoff", "max_backoff", "max_retries", "time_limit")
            for value in (math.inf, math.nan)
        ),
        ("min_backoff", 1e300),  # finite, but doubled by Retries past what a float holds
        ("max_backoff", 1e300),
    ],
)
def test_options_no_middleware_can_act_on_are_refused_at_send(kafka_broker, queue_name, option, value):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def task():
        pass

    with pytest.raises(BadMessage, match=f"option {option} is"):
        task.send_with_options(**{option: value})


def test_an_actor_declared_with_a_backoff_no_middleware_can_act_on_is_refused(kafka_broker, queue_name):
    with pytest.raises(BadMessage, match="option min_backoff is inf"):
        dramatiq.actor(
            lambda: None, actor_name="infinite", queue_name=queue_name, broker=kafka_broker, min_backoff=math.inf
        )


@pytest.mark.parametrize("delay", [math.inf, math.nan, -5])
def test_a_delay_no_tier_can_hold_is_refused_at_send(kafka_broker, queue_name, delay):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def task():
        pass

    with pytest.raises(BadMessage, match="a delay must be a finite number"):
        task.send_with_options(delay=delay)


def test_a_failing_message_with_backoffs_no_middleware_can_act_on_from_another_producer_is_dead_lettered(
    kafka, kafka_broker, worker, queue_name
):
    runs = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def flaky(n):
        runs.append(n)
        raise ValueError("fails")

    # Given a record written by another producer, whose backoff overflows when Retries doubles it
    fields = json.loads(flaky.message(1).encode())
    fields["options"] = {"min_backoff": 1e300, "max_backoff": 1e300}
    kafka_broker.ensure_topics([queue_name])
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(queue_name, json.dumps(fields).encode())
    producer.flush(10)
    # Then it is dead-lettered with the reason before it runs, and the queue moves on
    with pytest.raises(DeadLettered, match="option min_backoff is 1e[+]300"):
        kafka_broker.join(queue_name, timeout=30_000)
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    assert "option min_backoff is 1e+300" in DeadLetterInfo.from_headers(letter.headers()).reason
    assert runs == []


@pytest.mark.both_modes
def test_a_message_whose_retry_cannot_be_decided_is_dead_lettered_not_acked(kafka, kafka_broker, worker, queue_name):
    # Given an actor whose retry_when raises, so that Dramatiq's Retries fails after the actor ran
    def retry_when(retries, exception):
        raise ZeroDivisionError("division by zero")

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, retry_when=retry_when)
    def flaky():
        raise ValueError("the actor's own error")

    message = flaky.send()
    # Then the message is not acked and lost: it is dead-lettered, saying what failed
    with pytest.raises(AfterActorFailed, match="Retries.after_process_message failed: ZeroDivisionError"):
        kafka_broker.join(queue_name, timeout=30_000)
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    assert dramatiq.Message.decode(letter.value()).message_id == message.message_id
    reason = DeadLetterInfo.from_headers(letter.headers()).reason
    assert "ZeroDivisionError" in reason and "the actor raised ValueError: the actor's own error" in reason


def test_a_message_whose_result_cannot_be_stored_is_dead_lettered_not_acked(kafka, kafka_broker, queue_name):
    # Given results kept in Kafka, and an actor whose result cannot be encoded as JSON
    from broker import KafkaResultBackend

    backend = KafkaResultBackend(bootstrap_servers=kafka, topic=f"results-{queue_name}", partitions=1)
    kafka_broker.add_middleware(Results(backend=backend))

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, store_results=True)
    def odd():
        return {1, 2, 3}  # a set: no JSON

    worker = dramatiq.Worker(kafka_broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        odd.send()
        # Then its requester would wait in vain, so it is dead-lettered with why
        with pytest.raises(AfterActorFailed, match="Results.after_process_message failed: TypeError"):
            kafka_broker.join(queue_name, timeout=30_000)
    finally:
        worker.stop()
        backend.close()


def test_a_message_too_large_to_be_dead_lettered_is_refused_at_send(kafka_broker, queue_name):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def big(payload):
        pass

    # About 1 MB: under what Kafka takes, but with no room left for a dead letter's reason
    with pytest.raises(BadMessage, match="can be sent and still fit, with the reason, in its dead-letter topic"):
        big.send("x" * (DEFAULT_MAX_MESSAGE_BYTES - 20_000))


def test_a_large_failing_message_from_another_producer_is_dead_lettered_cut_to_fit(
    kafka, kafka_broker, worker, queue_name
):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=0)
    def fails(payload):
        if payload != "small":
            raise ValueError("\u00e9" * 50_000)  # a long reason, two bytes a character
        seen.append(payload)

    # Given a record of ~1 MB written by another producer (under what a consumer reads), then a small one
    kafka_broker.ensure_topics([queue_name])
    producer = Producer({"bootstrap.servers": kafka, "message.max.bytes": 1_048_588})
    producer.produce(queue_name, fails.message("x" * (DEFAULT_MAX_MESSAGE_BYTES - 2_000)).encode())
    producer.produce(queue_name, fails.message("small").encode())
    assert producer.flush(30) == 0
    # When the first fails for good, then its dead letter fits (cut), and the partition moves on
    kafka_broker.join(queue_name, timeout=60_000, fail_fast=False)
    assert seen == ["small"]
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    info = DeadLetterInfo.from_headers(letter.headers())
    assert info.original_size is not None and len(letter.value()) < info.original_size
    assert info.reason.startswith("ValueError: \u00e9")


@pytest.mark.parametrize("signal", ["ack", "nack"])
def test_a_middleware_error_before_an_ack_or_nack_holds_back_no_commit(kafka, queue_name, signal):
    from dramatiq.middleware import MiddlewareError

    class Refuses(dramatiq.Middleware):
        def before_ack(self, broker, message):
            if signal == "ack":
                raise MiddlewareError("no ack")

        def before_nack(self, broker, message):
            if signal == "nack":
                raise MiddlewareError("no nack")

    # Given a middleware that raises a MiddlewareError before every ack (or nack), on one partition
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=20)
    broker.add_middleware(Refuses())

    @dramatiq.actor(queue_name=queue_name, broker=broker, max_retries=0)
    def task(fail):
        if fail:
            raise ValueError("fails")

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        for _ in range(3):
            task.send(signal == "nack")
        # Then each is finished all the same, and the partition is committed to its end
        broker.join(queue_name, timeout=30_000, fail_fast=False)
        assert committed(broker, queue_name, queue_name) == {0: 3}
    finally:
        worker.stop()
        broker.close()


def test_a_record_under_the_read_limit_but_too_large_to_write_again_is_dead_lettered_cut(
    kafka, kafka_broker, worker, queue_name
):
    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def mark(name):
        seen.append(name)

    # Given, from another producer, an undecodable record under what a consumer reads but with no
    # room left for a dead letter's headers, then a valid message behind it
    kafka_broker.ensure_topics([queue_name])
    size = DEFAULT_MAX_MESSAGE_BYTES - 200
    assert kafka_broker.max_record_bytes < size < DEFAULT_MAX_MESSAGE_BYTES
    producer = Producer({"bootstrap.servers": kafka, "message.max.bytes": 1_048_588})
    producer.produce(queue_name, b"x" * size, partition=0)
    producer.produce(queue_name, mark.message("behind").encode(), partition=0)
    assert producer.flush(30) == 0
    # Then the message behind it runs, and its dead letter keeps its start and its size
    kafka_broker.join(queue_name, timeout=60_000, fail_fast=False)
    assert seen == ["behind"]
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    info = DeadLetterInfo.from_headers(letter.headers())
    assert info.original_size == size and len(letter.value()) < size
    assert info.reason.startswith("undecodable message")


def test_a_future_eta_with_headers_too_large_to_move_is_dead_lettered(kafka, kafka_broker, worker, queue_name):
    from tests.test_consumer import set_max_message_bytes

    seen = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def mark(name):
        seen.append(name)

    # Given a queue topic whose operator allows 2 MB records, and on it, from another producer, a
    # small message due later with headers too large to move to its delay tier, then one due now
    kafka_broker.ensure_topics([queue_name])
    set_max_message_bytes(kafka_broker, queue_name, 2_000_000)
    later = mark.message_with_options(args=("later",), eta=current_millis() + 60_000)
    producer = Producer({"bootstrap.servers": kafka, "message.max.bytes": 2_000_000})
    producer.produce(queue_name, later.encode(), partition=0, headers=[("big", b"h" * 1_500_000)])
    producer.produce(queue_name, mark.message("behind").encode(), partition=0)
    assert producer.flush(30) == 0
    # Then the one behind runs, and the first is dead-lettered saying why
    kafka_broker.join(queue_name, timeout=60_000, fail_fast=False)
    assert seen == ["behind"]
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    assert "too large to move to its delay tier" in DeadLetterInfo.from_headers(letter.headers()).reason


@pytest.mark.both_modes
def test_an_eta_in_the_future_goes_through_the_delay_tiers(kafka, kafka_broker, worker, queue_name):
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def later(eta):
        ran.append(current_millis() - eta)

    eta = current_millis() + 2_000
    later.send_with_options(args=(eta,), eta=eta)
    kafka_broker.join(queue_name, timeout=30_000)
    # Then it ran, not before its eta, and its record was written to a delay tier, not the queue
    assert len(ran) == 1 and ran[0] >= 0
    assert record_count(kafka_broker, queue_name) == 1  # the move of the due message, once
    tiers = [kafka_broker.settings.topic(t) for t in kafka_broker.tiers.topics(f"{queue_name}.DQ")]
    assert sum(record_count(kafka_broker, t) for t in tiers) >= 1


def test_a_future_eta_on_the_queue_from_another_producer_holds_back_no_commit(kafka, kafka_broker, worker, queue_name):
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def mark(name):
        ran.append(name)

    # Given, on the queue's own topic, a message due in 4 s and one behind it due now
    kafka_broker.ensure_topics([queue_name])
    producer = Producer({"bootstrap.servers": kafka})
    later = mark.message_with_options(args=("later",), eta=current_millis() + 4_000)
    producer.produce(queue_name, later.encode(), partition=0)
    producer.produce(queue_name, mark.message("now").encode(), partition=0)
    producer.flush(10)
    # Then the one behind runs, and the queue's partition is committed past both, before the first is due
    eventually(
        lambda: ran == ["now"] and committed(kafka_broker, queue_name, queue_name).get(0) == 2,
        timeout=30,
        what="the message behind to run and both offsets to be committed",
        progress=lambda: (ran, committed(kafka_broker, queue_name, queue_name)),
    )
    # And the first runs once it is due
    kafka_broker.join(queue_name, timeout=30_000)
    assert ran == ["now", "later"]


@pytest.mark.parametrize("eta", [None, "tomorrow"])
def test_a_null_or_non_numeric_eta_runs_as_dramatiq_runs_it(kafka, kafka_broker, worker, queue_name, eta):
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def mark():
        ran.append(eta)

    kafka_broker.ensure_topics([queue_name])
    fields = json.loads(mark.message().encode())
    fields["options"] = {"eta": eta}
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(queue_name, json.dumps(fields).encode())
    producer.flush(10)
    kafka_broker.join(queue_name, timeout=30_000)
    assert ran == [eta]


@pytest.mark.parametrize("eta", ["Infinity", "NaN"])
def test_a_delay_record_whose_eta_is_no_finite_number_is_dead_lettered_and_the_partition_moves_on(
    kafka, kafka_broker, worker, queue_name, eta
):
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def mark(name):
        ran.append(name)

    # Given, on a delay tier, a record whose eta no clock reaches, and a valid one behind it
    kafka_broker.ensure_topics([queue_name])
    tier = kafka_broker.settings.topic(kafka_broker.tiers.for_delay(0).topic(f"{queue_name}.DQ"))
    poison = json.loads(mark.message("poison").copy(queue_name=f"{queue_name}.DQ").encode())
    poison["options"] = {"eta": float(eta)}  # json writes these as the Infinity and NaN it reads
    valid = mark.message("valid").copy(queue_name=f"{queue_name}.DQ", options={"eta": current_millis()})
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(tier, json.dumps(poison).encode(), partition=0)
    producer.produce(tier, valid.encode(), partition=0)
    producer.flush(10)
    # Then the valid one runs, and the poison is dead-lettered with its reason
    kafka_broker.join(queue_name, timeout=30_000, fail_fast=False)
    assert ran == ["valid"]
    [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
    assert "option eta is" in DeadLetterInfo.from_headers(letter.headers()).reason


@pytest.mark.both_modes
def test_records_the_consumer_dead_letters_itself_are_in_dead_letters_and_fail_join(
    kafka, kafka_broker, worker, queue_name
):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker)
    def task():
        pass

    kafka_broker.ensure_topics([queue_name])
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(queue_name, b"\xff not json", partition=0)
    producer.flush(10)
    with pytest.raises(DeadLettered, match=f"{queue_name}/0/0: undecodable message"):
        kafka_broker.join(queue_name, timeout=30_000)
    [letter] = kafka_broker.dead_letters
    assert (letter.message_id, letter.actor_name) == (f"{queue_name}/0/0", "")
    assert letter.options["dead_letter_reason"].startswith("undecodable message")


@pytest.mark.both_modes
def test_dead_letters_keep_no_frames_of_the_failed_run(kafka_broker, worker, queue_name):
    @dramatiq.actor(queue_name=queue_name, broker=kafka_broker, max_retries=0)
    def doomed():
        raise ValueError("nope")

    doomed.send()
    with pytest.raises(ValueError, match="nope") as raised:
        kafka_broker.join(queue_name, timeout=30_000)
    assert raised.value.__traceback__ is not None  # the raise in join() makes a fresh one
    [(_, kept)] = kafka_broker._dead_letters[queue_name]
    assert isinstance(kept, ValueError) and str(kept) == "nope"
    assert (kept.__traceback__, kept.__context__, kept.__cause__) == (None, None, None)


def test_flush_creates_no_topics(kafka, queue_name):
    broker = KafkaBroker(bootstrap_servers=kafka)
    broker.declare_queue(queue_name)
    broker.flush_all()
    assert queue_name not in broker.admin.list_topics(timeout=10).topics
    broker.close()


def record_count(broker: KafkaBroker, topic: str) -> int:
    from tests.test_consumer import records_in

    return records_in(broker, topic)


def test_partitions_added_to_a_queue_are_read_within_seconds(kafka, queue_name):
    from confluent_kafka.admin import NewPartitions

    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, commit_interval_ms=20)
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def mark(n):
        ran.append(n)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        mark.send(0)
        broker.join(queue_name, timeout=30_000)
        # When a partition is added to the queue's topic, and a message written to it
        for future in broker.admin.create_partitions([NewPartitions(queue_name, 2)]).values():
            future.result(30)
        producer = Producer({"bootstrap.servers": kafka})
        producer.produce(queue_name, mark.message(1).encode(), partition=1)
        assert producer.flush(30) == 0
        # Then it runs within seconds, not after librdkafka's five-minute metadata refresh
        eventually(lambda: 1 in ran, timeout=30, what="the message on the new partition to run")
    finally:
        worker.stop()
        broker.close()


def test_a_new_queues_consumers_log_no_missing_topic_while_its_topics_are_made(kafka, queue_name, capfd, caplog):
    # Given a worker that starts on a queue no one used, and a message sent to it at once
    sender = KafkaBroker(bootstrap_servers=kafka)
    broker = KafkaBroker(bootstrap_servers=kafka, commit_interval_ms=20)
    ran = threading.Event()
    dramatiq.actor(lambda: None, actor_name="first", queue_name=queue_name, broker=sender)
    dramatiq.actor(ran.set, actor_name="first", queue_name=queue_name, broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        sender.get_actor("first").send()
        assert ran.wait(30), "the first message did not run"
    finally:
        worker.stop()
        broker.close()
        sender.close()
    # Then no consumer said its topics were missing: they are made, with leaders, before it subscribes
    said = capfd.readouterr().err + caplog.text
    assert "not available" not in said and "Unknown topic" not in said, said[-2000:]
