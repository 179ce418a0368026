"""Share-group queues with real worker processes: parallelism beyond the partition count, a worker
SIGKILLed mid-batch, and a record whose workers keep dying.  (The broker's behaviour tests that
apply to share queues run in both modes in test_broker.py: the ``both_modes`` marker.)"""

from __future__ import annotations

import signal
from collections import Counter

import dramatiq
import pytest
from confluent_kafka import Producer

from broker import DeadLetterInfo, KafkaBroker
from tests.eventually import eventually
from tests.test_broker import read_topic
from tests.test_worker import Worker, at_least, duplicates, wait_for_records

#: The share groups' record lock in these tests (ms): a SIGKILLed worker's records come back after it.
LOCK_MS = 3_000


@pytest.fixture
def share_broker(kafka, queue_name):
    """A broker of the test process, to send to a one-partition share queue."""
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1, share_queues={queue_name}, share_lock_ms=LOCK_MS)
    yield broker
    broker.close()


@pytest.fixture
def record(share_broker, queue_name):
    def record(n):
        raise AssertionError("runs in the worker processes only")

    return dramatiq.actor(record, queue_name=queue_name, broker=share_broker)


@pytest.fixture
def workers(kafka, queue_name, tmp_path):
    started = []

    def start(name: str, sleep_ms: int) -> Worker:
        worker = Worker(
            name,
            kafka=kafka,
            queue_name=queue_name,
            tmp_path=tmp_path,
            sleep_ms=sleep_ms,
            TEST_SHARE_LOCK_MS=str(LOCK_MS),
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.cleanup()


def test_two_worker_processes_share_one_partitions_work(record, workers, tmp_path):
    # Given a queue of one partition, read by a share group, and two worker processes
    first, second = workers("a", 50), workers("b", 50)
    for n in range(200):
        record.send(n)
    # When they run its tasks
    records = wait_for_records(tmp_path / "records", "200 tasks", at_least(200), workers=[first, second])
    # Then both did part of the work, and each task ran once
    by_process = Counter(pid for _, pid in records)
    assert len(by_process) == 2 and min(by_process.values()) >= 20, by_process
    assert duplicates(records) == {}


def test_a_worker_killed_mid_batch_loses_nothing(record, workers, tmp_path, kafka, share_broker, queue_name):
    # Given a worker running slow tasks of a share queue
    doomed = workers("doomed", 300)
    for n in range(60):
        record.send(n)
    wait_for_records(tmp_path / "records", "a first task run", at_least(1), workers=[doomed])
    # When it is SIGKILLed mid-batch, with records locked by it, and another worker takes over
    doomed.killpg(signal.SIGKILL)
    doomed.wait_group_gone()
    survivor = workers("survivor", 10)
    # Then its locked records come back once their lock expires, and every task runs
    records = wait_for_records(tmp_path / "records", "all 60 tasks", at_least(60), workers=[survivor])
    assert {n for n, _ in records} == set(range(60))
    twice = duplicates(records)
    # A task that ran in the killed worker but was not acknowledged runs again: at most its batch
    assert len(twice) <= 16, twice
    print(f"duplicates after the SIGKILL: {len(twice)} of 60")


def test_a_record_whose_workers_keep_dying_is_dead_lettered_not_dropped(kafka, queue_name):
    # Given a share queue with a delivery limit of 2, and a record already delivered once to a
    # consumer that died (its lock expired)
    broker = KafkaBroker(
        bootstrap_servers=kafka, partitions=1, share_queues={queue_name}, share_lock_ms=1_000, share_delivery_limit=2
    )
    ran = []

    @dramatiq.actor(queue_name=queue_name, broker=broker)
    def fragile():
        ran.append(1)

    try:
        broker.ensure_topics([queue_name])
        consumer = broker.consume(queue_name, prefetch=1, timeout=200)
        producer = Producer({"bootstrap.servers": kafka})
        producer.produce(queue_name, fragile.message().encode())
        assert producer.flush(10) == 0
        eventually(lambda: next(consumer), timeout=30, interval=0, what="its first delivery")
        # (the first consumer dies: it is closed without acknowledging, as a killed process would)
        consumer._consumer.close()
        consumer._closed = True
        # When another worker gets it for the last time the limit allows
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
        worker.start()
        try:
            [letter] = read_topic(kafka, f"{queue_name}.XQ", 1)
        finally:
            worker.stop()
        # Then it is dead-lettered, saying why, and not run again
        assert DeadLetterInfo.from_headers(letter.headers()).reason.startswith("delivery count exceeded: delivered 2")
        assert ran == []
    finally:
        broker.close()
