"""Reliability: poison records on a queue are dead-lettered with their reasons, the queue keeps
flowing, `kafka-tasks dlq list` shows them and `kafka-tasks dlq replay` sends one back once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dramatiq
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware import CurrentMessage

from broker import DeadLetterInfo, KafkaBroker
from tests.eventually import eventually
from tests.reliability import report

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parent.parent

#: The limit the test's broker decodes up to, so an "oversized" record is quick to produce.
LIMIT = 10_000

#: Every wait in this test, in seconds: far above what it needs on a 2-core machine.
TIMEOUT = 60


def join(broker: KafkaBroker, queue_name: str, where: str) -> None:
    try:
        broker.join(queue_name, timeout=TIMEOUT * 1000, fail_fast=False)
    except QueueJoinTimeout:
        pytest.fail(f"{queue_name} did not drain within {TIMEOUT}s {where}", pytrace=False)


def read_all(kafka: str, topic: str) -> list:
    """Every record of a topic, read from its start to its current end."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": "poison-reader", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, TopicPartition(topic, p)) for p in partitions}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, high) in ends.items() if high > low])
        wanted = sum(high - low for low, high in ends.values())
        records = []

        def read() -> bool:
            if len(records) < wanted:
                record = consumer.poll(0.2)
                if record is not None and record.error() is None:
                    records.append(record)
            return len(records) >= wanted

        eventually(
            read, timeout=TIMEOUT, interval=0, what=f"the {wanted} records of {topic}", progress=lambda: len(records)
        )
        return records
    finally:
        consumer.close()


def watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """A partition's low and high offsets, once a topic created a moment ago has its leader."""
    errors = []

    def read() -> tuple[int, int] | None:
        try:
            return consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        except KafkaException as e:
            errors.append(e)
            return None

    return eventually(
        read,
        timeout=TIMEOUT,
        interval=0.1,
        what=f"the offsets of {tp.topic} [{tp.partition}]",
        progress=lambda: errors[-1:],
    )


def dlq_command(kafka: str, queue_name: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``kafka-tasks dlq ...`` in its own process, on the test's queue."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "TEST_QUEUE": queue_name, "KAFKA_TASKS_BROKER": "kafka"}
    try:
        return subprocess.run(
            [sys.executable, "-m", "tasks.cli", "dlq", *args, queue_name, "--module", "tests.workerapp"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`kafka-tasks dlq {' '.join(args)}` hung for {TIMEOUT}s: {e.stdout}{e.stderr}", pytrace=False)


def test_poison_is_dead_lettered_listed_and_replayed_once(kafka, queue_name):
    # Given a worker on a queue of two partitions, decoding records of up to 10,000 bytes
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=20, max_message_bytes=LIMIT)
    broker.add_middleware(CurrentMessage())
    seen, late = [], []

    @dramatiq.actor(queue_name=queue_name, broker=broker, max_retries=0)
    def remember(n):
        seen.append(n)

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        remember.send(0)  # creates the queue's topics
        # When malformed JSON, a message for an unknown actor and an oversized message are produced
        # straight to the queue topic, then valid tasks
        producer = Producer({"bootstrap.servers": kafka})
        unknown = dramatiq.Message(queue_name=queue_name, actor_name="late_actor", args=(7,), kwargs={}, options={})
        oversized = remember.message("x" * 2 * LIMIT)
        for value in (b'{"queue_name": "oops", not json', unknown.encode(), oversized.encode()):
            producer.produce(queue_name, value, partition=0)
        assert producer.flush(30) == 0, "the poison records were not stored"
        started = time.monotonic()
        broker.enqueue_many([remember.message(n) for n in range(1, 21)])
        join(broker, queue_name, "after the poison records: the queue stopped flowing")
        drained = time.monotonic() - started

        # Then every valid task ran once and the queue's groups committed past the poison
        assert sorted(seen) == list(range(21))
        # And the dead-letter topic holds the three, with their reasons
        letters = read_all(kafka, f"{queue_name}.XQ")
        reasons = {record.offset(): DeadLetterInfo.from_headers(record.headers()).reason for record in letters}
        assert len(reasons) == 3, reasons
        [undecodable] = [o for o, r in reasons.items() if r.startswith("undecodable message: DecodeError")]
        [unknown_id] = [o for o, r in reasons.items() if r.startswith("ActorNotFound")]
        [too_big] = [o for o, r in reasons.items() if r.startswith("oversized message")]
        assert reasons[too_big] == f"oversized message: {len(oversized.encode())} bytes > {LIMIT} bytes"
        assert all(DeadLetterInfo.from_headers(r.headers()).topic == queue_name for r in letters)
        cut = DeadLetterInfo.from_headers(letters[too_big].headers()).original_size
        assert cut == len(oversized.encode())

        # And `kafka-tasks dlq list` shows them, by the ids replay takes
        listing = dlq_command(kafka, queue_name, "list")
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:-1]}
        assert set(rows) == {str(undecodable), str(unknown_id), str(too_big)}, listing.stdout
        assert "late_actor" in rows[str(unknown_id)] and unknown.message_id in rows[str(unknown_id)]
        assert "ActorNotFound" in rows[str(unknown_id)] and "undecodable message" in rows[str(undecodable)]
        assert "oversized message" in rows[str(too_big)]
        assert listing.stdout.splitlines()[-1] == f"3 dead letter(s) in {queue_name}.XQ."

        # When the cause is fixed (the actor now exists) and the unknown-actor message is replayed
        @dramatiq.actor(queue_name=queue_name, broker=broker, actor_name="late_actor")
        def late_actor(n):
            late.append((n, CurrentMessage.get_current_message().message_id))

        replay = dlq_command(kafka, queue_name, "replay", "--id", str(unknown_id))
        assert replay.returncode == 0, replay.stderr
        join(broker, queue_name, "after the replay")
        # Then it ran once, with its own message id
        assert late == [(7, unknown.message_id)]
        assert replay.stdout.splitlines()[-1] == "1 replayed, 0 skipped."

        # When it, and then everything, is replayed again
        queue_records = len(read_all(kafka, queue_name))
        again = dlq_command(kafka, queue_name, "replay", "--id", str(unknown_id))
        everything = dlq_command(kafka, queue_name, "replay")
        join(broker, queue_name, "after the second replay")
        # Then nothing was sent: it was skipped, as were the records that are no messages
        assert again.returncode == 0 and everything.returncode == 0, again.stderr + everything.stderr
        assert again.stdout.splitlines() == [f"skipped {unknown_id}: already replayed", "0 replayed, 1 skipped."]
        assert everything.stdout.splitlines()[-1] == "0 replayed, 3 skipped."
        assert "not a Dramatiq message" in everything.stdout
        assert len(read_all(kafka, queue_name)) == queue_records
        assert late == [(7, unknown.message_id)]
        markers = read_all(kafka, f"{queue_name}.XQ.replayed")
        assert [record.key() for record in markers] == [str(unknown_id).encode()]
        assert sorted(seen) == list(range(21))
    finally:
        worker.stop()
        broker.close()

    report(
        "Poison", "poison records produced straight to the queue topic", "3 (malformed JSON, unknown actor, oversized)"
    )
    report("Poison", "valid tasks sent behind them / run", f"21 / {len(seen)}")
    report("Poison", "dead letters read back from `<queue>.XQ`, with reasons", len(reasons))
    report("Poison", "time for 20 valid tasks to drain past the poison", f"{drained:.2f} s")
    report("Poison", "`dlq list` rows", len(rows))
    report("Poison", "runs of the replayed unknown-actor message", len(late))
    report("Poison", "second replay", "skipped (already replayed); 0 records sent")
