"""DurableProducer: confirmed sends and batches, and how a batch collects its acknowledgements."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import broker.producer
from broker.producer import Acknowledgements, DeliveryFailed, DurableProducer, Record, is_fatal
from tests.eventually import eventually


class Delivered:
    """What librdkafka hands a delivery callback for an acknowledged record."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


# Acknowledgements: pure logic --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, maybe",
    [
        (KafkaError._MSG_TIMED_OUT, True),  # sent, perhaps stored, not confirmed in time
        (KafkaError.REQUEST_TIMED_OUT, True),
        (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, True),
        (KafkaError._TRANSPORT, True),
        (KafkaError.MSG_SIZE_TOO_LARGE, False),  # refused by the broker
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, False),
        (KafkaError.NOT_ENOUGH_REPLICAS, False),
        (KafkaError._QUEUE_FULL, False),  # never sent
    ],
)
def test_a_refusal_tells_certainly_not_stored_from_maybe_stored(code, maybe):
    acks = Acknowledgements(["t"])
    acks.reporter(0)(KafkaError(code), None)
    with pytest.raises(DeliveryFailed) as failed:
        acks.wait(1)
    assert failed.value.maybe_stored is maybe


def test_a_batch_with_one_record_that_may_be_stored_may_be_stored():
    acks = Acknowledgements(["t", "t"])
    acks.reporter(0)(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    acks.reporter(1)(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    with pytest.raises(DeliveryFailed) as failed:
        acks.wait(1)
    assert failed.value.maybe_stored


def test_no_report_in_time_may_be_stored():
    with pytest.raises(DeliveryFailed) as failed:
        Acknowledgements(["t"]).wait(0.01)
    assert failed.value.maybe_stored


def test_acknowledgements_return_each_records_position_in_order():
    acks = Acknowledgements(["a", "b", "c"])
    # Reports arrive in any order
    acks.reporter(2)(None, Delivered(1, 30))
    acks.reporter(0)(None, Delivered(0, 10))
    acks.reporter(1)(None, Delivered(1, 29))
    assert acks.wait(1) == [(0, 10), (1, 29), (1, 30)]


def test_acknowledgements_raise_the_refusal_naming_its_topic():
    acks = Acknowledgements(["good", "bad"])
    acks.reporter(0)(None, Delivered(0, 1))
    acks.reporter(1)(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    with pytest.raises(DeliveryFailed, match="for bad: Local: Message timed out"):
        acks.wait(1)


def test_acknowledgements_time_out_while_a_report_is_missing():
    acks = Acknowledgements(["a", "b"])
    acks.reporter(0)(None, Delivered(0, 1))
    with pytest.raises(DeliveryFailed, match="1 of 2 records had no delivery report"):
        acks.wait(0.05)


def test_acknowledgements_wake_the_waiter_when_the_last_report_arrives_on_another_thread():
    acks = Acknowledgements(["a", "b"])
    acks.reporter(0)(None, Delivered(0, 1))
    reporter = threading.Thread(target=acks.reporter(1), args=(None, Delivered(0, 2)))
    reporter.start()
    assert acks.wait(10) == [(0, 1), (0, 2)]
    reporter.join()


def test_acknowledgements_of_an_empty_batch_return_at_once():
    assert Acknowledgements([]).wait(0) == []


# On Kafka ------------------------------------------------------------------------------------------


@pytest.fixture
def topic(kafka, topic_name):
    admin = AdminClient({"bootstrap.servers": kafka})
    admin.create_topics([NewTopic(topic_name, 2, 1)])[topic_name].result(30)
    return topic_name


@pytest.fixture
def producer(kafka):
    producer = DurableProducer({"bootstrap.servers": kafka}, delivery_timeout_ms=2_000)
    yield producer
    producer.close(timeout=5)


def test_send_many_returns_the_offsets_kafka_gave_each_record(producer, topic):
    positions = producer.send_many([Record(topic, b"%d" % n, partition=n % 2) for n in range(6)])
    assert [partition for partition, _ in positions] == [0, 1, 0, 1, 0, 1]
    assert [offset for partition, offset in positions if partition == 0] == [0, 1, 2]
    assert [offset for partition, offset in positions if partition == 1] == [0, 1, 2]


def test_send_many_fails_when_one_record_of_the_batch_is_not_acknowledged(producer, topic):
    # A partition the topic does not have: librdkafka gives up on that record only.
    records = [Record(topic, b"fine", partition=0), Record(topic, b"lost", partition=7)]
    with pytest.raises(DeliveryFailed, match=topic):
        producer.send_many(records)


def test_send_async_resolves_to_the_records_position(producer, topic):
    first = producer.send(Record(topic, b"first", partition=1))
    assert producer.send_async(Record(topic, b"second", partition=1)).result(10) == (1, first[1] + 1)


def test_a_closed_producer_refuses_to_send(kafka, topic):
    producer = DurableProducer({"bootstrap.servers": kafka})
    producer.close()
    with pytest.raises(DeliveryFailed, match="closed"):
        producer.send(Record(topic, b"late"))


# Fatal errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fatal"),
    [
        (KafkaError(KafkaError._FATAL), True),
        (KafkaError(KafkaError.UNKNOWN_PRODUCER_ID, fatal=True), True),
        (KafkaError(KafkaError._MSG_TIMED_OUT), False),
        (KafkaError(KafkaError._TRANSPORT), False),
    ],
)
def test_is_fatal_tells_the_errors_no_client_recovers_from(error, fatal):
    assert is_fatal(error) is fatal


@pytest.fixture
def first_client_fails_fatally(monkeypatch):
    """Makes DurableProducer's first librdkafka client fail fatally at its first record.

    Kafka offers no way to cause such an error on demand (they come from idempotence state lost
    on the broker), so that one is injected, as librdkafka reports it: through the error callback,
    the failed delivery report of the record it held, and ``_FATAL`` for every later ``produce``.
    Every other record, and every later client, is real and goes to the real broker.
    """

    class FailsFatally(Producer):
        made = 0

        def __init__(self, config):
            super().__init__(config)
            FailsFatally.made += 1
            self.fails = FailsFatally.made == 1
            self.failed = False
            self.error_cb = config["error_cb"]

        def produce(self, topic, value=None, *args, on_delivery=None, **kwargs):
            if self.failed:
                raise KafkaException(KafkaError(KafkaError._FATAL, "Fatal error"))
            if self.fails:
                self.failed = True
                error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "injected", fatal=True)
                self.error_cb(error)
                on_delivery(error, None)
                return None
            return super().produce(topic, value, *args, on_delivery=on_delivery, **kwargs)

    monkeypatch.setattr(broker.producer, "Producer", FailsFatally)
    return FailsFatally


@pytest.fixture
def fatal_producer(kafka, first_client_fails_fatally):
    producer = DurableProducer({"bootstrap.servers": kafka}, delivery_timeout_ms=2_000)
    yield producer
    producer.close(timeout=5)


@pytest.fixture
def failed_once(fatal_producer, topic):
    """The producer once its first client failed fatally with a record in hand."""
    with pytest.raises(DeliveryFailed):
        fatal_producer.send(Record(topic, b"held when it failed", partition=0))
    return fatal_producer


def test_the_record_a_fatally_failed_client_held_fails_its_send(fatal_producer, topic):
    with pytest.raises(DeliveryFailed, match="injected"):
        fatal_producer.send(Record(topic, b"held when it failed", partition=0))


def test_a_send_after_a_fatal_error_goes_through_a_new_client(failed_once, topic, first_client_fails_fatally):
    assert failed_once.send(Record(topic, b"after", partition=0)) == (0, 0)
    assert first_client_fails_fatally.made == 2


def test_a_client_reported_fatal_is_replaced_before_the_next_send(failed_once, first_client_fails_fatally):
    eventually(
        lambda: first_client_fails_fatally.made >= 2,
        timeout=10,
        what="a new client",
        progress=lambda: first_client_fails_fatally.made,
    )
    assert first_client_fails_fatally.made == 2
