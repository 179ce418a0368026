"""KafkaResultBackend on a real Kafka: request/response between actors and processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import dramatiq
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from dramatiq.results import ResultFailure, ResultMissing, Results, ResultTimeout

from broker import REPLY_PARTITION, KafkaBroker, KafkaResultBackend, ReplyRouting
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def results_topic():
    return f"results-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def setup(kafka, queue_name, results_topic):
    """A broker with the Kafka result backend, a result-backed actor and a running worker."""
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=20)
    backend = KafkaResultBackend(bootstrap_servers=kafka, topic=results_topic, partitions=4)
    broker.add_middleware(Results(backend=backend))
    broker.add_middleware(ReplyRouting(backend))

    @dramatiq.actor(queue_name=queue_name, broker=broker, store_results=True, max_retries=0)
    def get_user(user_id):
        if user_id < 0:
            raise LookupError(f"no such user: {user_id}")
        return {"id": user_id, "name": f"user-{user_id}"}

    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    yield broker, backend, get_user
    worker.stop()
    backend.close()
    broker.close()


def test_round_trip(setup):
    _, backend, get_user = setup
    message = get_user.send(7)
    assert message.get_result(backend=backend, block=True, timeout=10_000) == {"id": 7, "name": "user-7"}


def test_messages_carry_the_requesters_reply_partition(setup):
    _, backend, get_user = setup
    message = get_user.send(1)
    assert message.options[REPLY_PARTITION] == backend.reply_partition


def test_actor_failure_raises_result_failure(setup):
    _, backend, get_user = setup
    message = get_user.send(-1)
    with pytest.raises(ResultFailure, match="no such user: -1") as failure:
        message.get_result(backend=backend, block=True, timeout=10_000)
    assert failure.value.orig_exc_type == "LookupError"


def results_under_key(kafka, topic: str, key: str) -> int:
    """Counts the records of ``key`` in a results topic, read to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka,
            "group.id": f"count-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        ended, counted = set(), []

        def read_to_end() -> bool:
            record = consumer.poll(0.5)
            if record is not None and record.error():
                if record.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(record.partition())
            elif record is not None and record.key() == key.encode():
                counted.append(record)
            return len(ended) == len(partitions)

        eventually(
            read_to_end,
            timeout=30,
            interval=0,
            what=f"the end of every partition of {topic}",
            progress=lambda: sorted(ended),
        )
        return len(counted)
    finally:
        consumer.close()


class AfterNacks(dramatiq.Middleware):
    """Placed first, so that its ``after_nack`` runs after every other middleware's."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def after_nack(self, broker, message):
        self.seen.append(message.message_id)


def test_a_failure_is_stored_once(kafka, setup, results_topic):
    broker, backend, get_user = setup
    last = AfterNacks()
    broker.add_middleware(last, before=type(broker.middleware[0]))
    message = get_user.send(-2)
    with pytest.raises(ResultFailure):
        message.get_result(backend=backend, block=True, timeout=10_000)
    # What the Results middleware would store after the nack comes in its after_nack
    eventually(lambda: message.message_id in last.seen, what="every after_nack hook of the failed message")
    assert results_under_key(kafka, results_topic, backend.build_message_key(message)) == 1


def test_a_failure_kafka_refuses_holds_its_message_until_it_is_stored(setup, queue_name, results_topic, caplog):
    from tests.test_broker import committed
    from tests.test_consumer import refuse_records

    broker, backend, get_user = setup

    def done_once(count: int) -> bool:
        eventually(
            lambda: sum(committed(broker, queue_name, queue_name).values()) >= count,
            timeout=10,
            interval=0.1,
            what=f"{count} messages committed",
        )
        return sum(committed(broker, queue_name, queue_name).values()) == count

    get_user.send(1).get_result(backend=backend, block=True, timeout=10_000)  # creates the topics
    assert done_once(1)
    # Given a results topic that refuses records
    refuse_records(broker, results_topic)
    # When a message fails for good
    message = get_user.send(-3)
    eventually(
        lambda: "Failed to post_process_message" in caplog.text,
        timeout=30,
        what="the failed message's nack to be refused and tried again",
    )
    # Then it is not done while its failure is not stored
    assert sum(committed(broker, queue_name, queue_name).values()) == 1
    with pytest.raises(ResultMissing):
        message.get_result(backend=backend)
    # And once Kafka takes it, the requester gets the failure, and the message is done
    refuse_records(broker, results_topic, refuse=False)
    with pytest.raises(ResultFailure, match="no such user: -3"):
        message.get_result(backend=backend, block=True, timeout=30_000)
    assert done_once(2)


def test_a_result_stored_before_anyone_asks_is_returned(setup):
    broker, backend, get_user = setup
    message = get_user.send(3)
    # The worker stores the result before it acks, so after the join the result is in Kafka
    broker.join(message.queue_name, timeout=10_000)
    assert message.get_result(backend=backend, block=False) == {"id": 3, "name": "user-3"}


@pytest.fixture
def unanswered(kafka, results_topic, queue_name):
    """A result-backed message that nothing consumes, and its backend."""
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=1)
    backend = KafkaResultBackend(bootstrap_servers=kafka, topic=results_topic, partitions=2)
    broker.add_middleware(Results(backend=backend))
    broker.add_middleware(ReplyRouting(backend))
    lonely = dramatiq.actor(lambda: 1, actor_name="lonely", queue_name=queue_name, broker=broker, store_results=True)
    yield lonely.send(), backend
    backend.close()
    broker.close()


def test_get_result_without_block_raises_result_missing_before_the_result_exists(unanswered):
    message, backend = unanswered
    with pytest.raises(ResultMissing):
        message.get_result(backend=backend, block=False)


def test_get_result_raises_result_timeout_when_no_result_comes(unanswered):
    message, backend = unanswered
    with pytest.raises(ResultTimeout):
        message.get_result(backend=backend, block=True, timeout=300)


def test_many_threads_get_their_own_results(setup):
    _, backend, get_user = setup
    results, errors = {}, []

    def ask(n):
        try:
            results[n] = get_user.send(n).get_result(backend=backend, block=True, timeout=20_000)["id"]
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {n: n for n in range(20)}


def test_async_callers_await_results_without_blocking_the_loop(setup):
    _, backend, get_user = setup

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        clock = asyncio.ensure_future(ticker())
        messages = [get_user.send(n) for n in range(5)]
        values = await asyncio.gather(*(backend.get_result_async(m, timeout=10_000) for m in messages))
        clock.cancel()
        return values, ticks

    values, ticks = asyncio.run(main())
    assert [v["id"] for v in values] == list(range(5))
    assert ticks > 0


def test_async_wait_times_out(unanswered):
    message, backend = unanswered
    with pytest.raises(ResultTimeout):
        asyncio.run(backend.get_result_async(message, timeout=200))


def test_a_thousand_outstanding_requests_from_one_process(setup):
    broker, backend, get_user = setup
    messages = [get_user.message(n) for n in range(1000)]
    sent = broker.enqueue_many(messages)
    values = [m.get_result(backend=backend, block=True, timeout=60_000)["id"] for m in sent]
    assert values == list(range(1000))


def test_a_restarted_requester_gets_results_of_messages_sent_before(kafka, results_topic, queue_name, setup):
    # Given a request sent by one backend instance, which then goes away
    _, _first_backend, get_user = setup
    message = get_user.send(11)
    encoded = message.encode()
    # When a new requester (another backend, another reply partition) asks for its result
    restarted = KafkaResultBackend(bootstrap_servers=kafka, topic=results_topic, partitions=4)
    try:
        again = dramatiq.Message.decode(encoded)
        assert again.get_result(backend=restarted, block=True, timeout=10_000) == {"id": 11, "name": "user-11"}
    finally:
        restarted.close()


@pytest.fixture
def one_partition_backend(kafka, results_topic):
    """A result backend whose results all share one partition, with no ReplyRouting."""
    backend = KafkaResultBackend(bootstrap_servers=kafka, topic=results_topic, partitions=1)
    backend.ensure_topic()
    yield backend
    backend.close()


def plain_message(queue_name: str) -> dramatiq.Message:
    return dramatiq.Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={})


def test_a_result_read_before_anyone_asked_for_it_is_found_when_asked(one_partition_backend, queue_name):
    # Given the results of two messages sent elsewhere, in one partition
    backend = one_partition_backend
    first, second = plain_message(queue_name), plain_message(queue_name)
    backend.store_result(first, 1, 60_000)
    backend.store_result(second, 2, 60_000)
    # When the first is asked for, the listener reads both, and drops the second (nobody wants it yet)
    assert backend.get_result(first, block=False, timeout=10_000) == 1
    # Then the second is still found when asked for
    assert backend.get_result(second, block=True, timeout=10_000) == 2


def test_a_cancelled_async_wait_leaves_no_waiter_behind(one_partition_backend, queue_name):
    # Given an async wait for a result that never comes
    backend = one_partition_backend
    message = plain_message(queue_name)

    async def wait_then_cancel():
        waiting = asyncio.ensure_future(backend.get_result_async(message, timeout=60_000))
        while not any(entry.waiters for entry in backend._book._entries.values()):
            await asyncio.sleep(0.01)
        # When it is cancelled (a client went away)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(wait_then_cancel())
    # Then its key can expire: no waiter holds it in memory
    assert backend._book.expire(now=2**62) == 1
    assert len(backend._book) == 0


def test_the_reply_listener_survives_a_result_record_it_cannot_read(kafka, one_partition_backend, queue_name):
    # Given a record with an unreadable expiry in the results topic, before a real result
    backend = one_partition_backend
    message = plain_message(queue_name)
    producer = Producer({"bootstrap.servers": kafka})
    producer.produce(backend.topic, b"?", key=b"some-key", headers=[("x-result-expires", b"soon")])
    assert producer.flush(10) == 0
    backend.store_result(message, 5, 60_000)
    # When the listener reads both, then the real result still reaches its caller
    assert backend.get_result(message, block=True, timeout=10_000) == 5


# Separate processes, as in production ----------------------------------------------------------


def start_responder(kafka: str, queue_name: str, results_topic: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "TEST_QUEUE": queue_name, "RESULTS_TOPIC": results_topic}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tasks.cli", "worker", "tests.resultsapp", "--processes", "1", "--threads", "8"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def test_requesters_and_a_responder_in_separate_processes_each_get_their_own(
    kafka, queue_name, results_topic, tmp_path
):
    responder = start_responder(kafka, queue_name, results_topic, tmp_path / "worker.log")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "TEST_QUEUE": queue_name, "RESULTS_TOPIC": results_topic}
    try:
        requesters = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.resultsapp", tag, "50"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tag in ("alpha", "beta")
        ]
        outputs = [r.communicate(timeout=120) for r in requesters]
    finally:
        stop(responder)
    for (out, err), tag in zip(outputs, ("alpha", "beta")):
        assert out, f"requester {tag} printed nothing:\n{err[-2000:]}\n{(tmp_path / 'worker.log').read_text()[-2000:]}"
        pairs = json.loads(out)
        assert [sent for sent, _ in pairs] == [f"{tag}-{n}" for n in range(50)]
        assert all(sent == received for sent, received in pairs)


@pytest.fixture
def plain_setup(kafka, queue_name, results_topic):
    """As Dramatiq's documentation teaches it: the Results middleware with the backend, and nothing else."""
    broker = KafkaBroker(bootstrap_servers=kafka, partitions=2, commit_interval_ms=20)
    backend = KafkaResultBackend(bootstrap_servers=kafka, topic=results_topic, partitions=4)
    broker.add_middleware(Results(backend=backend))

    @dramatiq.actor(queue_name=queue_name, broker=broker, store_results=True, max_retries=0)
    def get_user(user_id):
        if user_id < 0:
            raise LookupError(f"no such user: {user_id}")
        return {"id": user_id}

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield broker, backend, get_user
    worker.stop()
    backend.close()
    broker.close()


def test_results_alone_route_replies_to_the_requesters_partition(plain_setup):
    # Given Results(backend=KafkaResultBackend()) without ReplyRouting
    _, backend, get_user = plain_setup
    # When a result-backed message is sent, then it carries this process's reply partition, which
    # the requester reads already (no rereading of the result's partition from the message's time on)
    message = get_user.send(4)
    assert message.options[REPLY_PARTITION] == backend.reply_partition
    assert message.get_result(backend=backend, block=True, timeout=10_000) == {"id": 4}


def test_results_alone_store_a_failure_before_its_nack_and_once(kafka, plain_setup, results_topic):
    broker, backend, get_user = plain_setup
    last = AfterNacks()
    broker.add_middleware(last, before=type(broker.middleware[0]))
    message = get_user.send(-5)
    with pytest.raises(ResultFailure, match="no such user: -5"):
        message.get_result(backend=backend, block=True, timeout=10_000)
    eventually(lambda: message.message_id in last.seen, what="every after_nack hook of the failed message")
    assert results_under_key(kafka, results_topic, backend.build_message_key(message)) == 1


def test_a_requester_keeps_no_result_it_handed_over(setup):
    _, backend, get_user = setup
    # When many requests are answered
    for n in range(200):
        assert get_user.send(n).get_result(backend=backend, block=True, timeout=10_000)["id"] == n
    # Then the requester remembers none of them
    assert len(backend._book) == 0
