"""A producer whose sends return only once Kafka has acknowledged the record.

``enqueue`` promises durability: a task that was enqueued survives a crash of the sender.  So
every send waits for the delivery report of an idempotent producer with ``acks=all``, with a
bounded wait.  A background thread serves delivery reports, so many threads can send at once and
each wakes as soon as its own records are confirmed; a batch waits once, on one lock that its
last report releases (:class:`Acknowledgements`), instead of one flush, or one future, per record.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Producer

from .clientlog import ClientLog

#: How often clients refresh topic metadata (ms), so partitions added to a topic are used within
#: seconds; librdkafka's default is 5 minutes.
METADATA_REFRESH_MS = 5_000

#: How long a record may take to be acknowledged before the send fails (librdkafka's
#: ``delivery.timeout.ms``).  A web request behind ``enqueue`` must not hang longer than this.
DEFAULT_DELIVERY_TIMEOUT_MS = 5_000

logger = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """Kafka did not acknowledge a record: the send must not count.

    Parameters:
      maybe_stored(bool): Whether Kafka may have stored it all the same: its request may have reached
        the broker, and its answer not come back (a broker that stalls, a timeout).  ``False`` means
        certainly not stored: refused by the broker or never sent.
    """

    #: Set when the message being processed owes the send (see :mod:`broker.followups`).
    owed = False

    def __init__(self, *args, maybe_stored: bool = False) -> None:
        super().__init__(*args)
        self.maybe_stored = maybe_stored


#: Errors of a record that Kafka certainly did not store: the broker refused it, or it was never
#: sent.  Any other error may come after the broker stored it (a timeout, a lost connection).
NOT_STORED_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.POLICY_VIOLATION,
        KafkaError._QUEUE_FULL,
        KafkaError._PURGE_QUEUE,
        KafkaError._INVALID_ARG,
    }
)


@dataclass(frozen=True)
class Record:
    """A record to send.

    Parameters:
      topic(str): The full topic name.
      value(bytes): The payload.
      key(bytes|None): Records with the same key go to the same partition, in order.
      headers(list|None): ``(name, bytes)`` pairs.
      timestamp(int|None): The record's timestamp in epoch milliseconds (now by default).
      partition(int|None): The partition to write to; by default the key (or librdkafka) picks it.
    """

    topic: str
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    timestamp: int | None = None
    partition: int | None = None

    @property
    def size(self) -> int:
        """Its bytes as Kafka counts them against a topic's limit, but for the batch's own overhead."""
        return record_size(self.value, self.key, self.headers)


def record_size(value: bytes | None, key: bytes | None, headers) -> int:
    """The bytes of a record's value, key and headers (``(name, bytes)`` pairs)."""
    size = len(value or b"") + len(key or b"")
    for name, header in headers or ():
        size += len(name.encode() if isinstance(name, str) else name) + len(header or b"")
    return size


def _not_acknowledged(topic: str, error) -> DeliveryFailed:
    maybe = error.code() not in NOT_STORED_ERRORS
    return DeliveryFailed(f"Kafka did not acknowledge a record for {topic}: {error.str()}", maybe_stored=maybe)


def is_fatal(error: KafkaError) -> bool:
    """Whether an error leaves the client unable to send again (see ``DurableProducer._replace``)."""
    return error.fatal() or error.code() == KafkaError._FATAL


class _Client(NamedTuple):
    """A librdkafka producer, and the list its fatal error is put in if one comes."""

    producer: Producer
    fatal: list


class Acknowledgements:
    """Collects the delivery reports of one batch of records; its sender waits once for all of them.

    A ``concurrent.futures.Future`` per record, and ``wait()`` over them, cost more CPU than the
    send itself (a ``Condition`` per record, a waiter installed in each; measured in
    ``docs/benchmarks.md``).  The reports arrive on whichever thread polls the producer.

    Parameters:
      topics(list[str]): The topic of each record, in order, to name it in errors.
    """

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics
        self._positions: list[tuple[int, int] | None] = [None] * len(topics)
        self._pending = len(topics)
        self._error: DeliveryFailed | None = None
        self._counting = threading.Lock()
        #: Held until the last report arrives: the sender waits by acquiring it.
        self._all_reported = threading.Lock()
        if topics:
            self._all_reported.acquire()

    def reporter(self, index: int):
        """Returns the ``on_delivery`` callback of the record at ``index``."""

        def delivered(error, message) -> None:
            if error is None:
                self._positions[index] = (message.partition(), message.offset())
            elif self._error is None or not self._error.maybe_stored:
                # One record that may be stored makes the batch one that may be.
                self._error = _not_acknowledged(self._topics[index], error)
            with self._counting:
                self._pending -= 1
                if self._pending == 0:
                    self._all_reported.release()

        return delivered

    def wait(self, timeout: float) -> list[tuple[int, int]]:
        """Waits until every record is reported.

        Returns:
          Each record's ``(partition, offset)``, in order.

        Raises:
          DeliveryFailed: If a record was not acknowledged, or not every report arrived in time.
        """
        if not self._all_reported.acquire(timeout=timeout):
            raise DeliveryFailed(
                f"{self._pending} of {len(self._topics)} records had no delivery report within {timeout:g} s",
                maybe_stored=True,
            )
        if self._error is not None:
            raise self._error
        return self._positions


#: librdkafka settings every durable send depends on: a ``KAFKA_RDKAFKA_*`` variable may not change them.
OWNED_SETTINGS = {
    "enable.idempotence": "every send is idempotent, so a retried send is never stored twice",
    "acks": "every send waits until all in-sync replicas have the record (acks=all)",
    "delivery.timeout.ms": "set KAFKA_DELIVERY_TIMEOUT_MS (or delivery_timeout_ms=) instead",
    "message.timeout.ms": "set KAFKA_DELIVERY_TIMEOUT_MS (or delivery_timeout_ms=) instead",
    "transactional.id": "sends are not transactional",
}

#: The largest request the producer sends (bytes): Kafka's default ``max.message.bytes`` of a topic.
MESSAGE_MAX_BYTES = 1_048_588


class DurableProducer:
    """An idempotent ``acks=all`` producer with blocking and batched confirmed sends.

    If librdkafka's client fails fatally (an idempotence error it cannot recover from without
    risking duplicates), the records it held fail and a new client takes over, so one bad moment
    does not refuse every send until the process restarts.

    Parameters:
      config(dict): librdkafka settings for the cluster (see :class:`broker.KafkaSettings`).
      delivery_timeout_ms(int): The bound on one record's delivery.
    """

    def __init__(self, config: dict, *, delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS) -> None:
        self.delivery_timeout_ms = delivery_timeout_ms
        self._config = {
            # Every send waits for its acknowledgement, so lingering only adds latency: librdkafka
            # still batches what queues up while a request is in flight, and bulk sends arrive
            # together (measured against 1 ms in docs/benchmarks.md).
            "linger.ms": 0,
            # Kafka's own default limit, not librdkafka's smaller 1,000,000: what a consumer hands
            # out (broker.broker.DEFAULT_MAX_MESSAGE_BYTES) must fit again with a retry's traceback.
            "message.max.bytes": MESSAGE_MAX_BYTES,
            "request.timeout.ms": min(delivery_timeout_ms, 30_000),
            # New partitions of a topic are written to within seconds, not librdkafka's 5 minutes.
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "delivery.timeout.ms": delivery_timeout_ms,
            "message.timeout.ms": delivery_timeout_ms,
        }
        self._log = ClientLog("producer")
        #: Clients replaced after a fatal error, polled until their records are all reported.
        self._retired: list[Producer] = []
        self._replacing = threading.Lock()
        self._client = self._new_client()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._serve_delivery_reports, name="kafka-producer", daemon=True)
        self._poller.start()

    def _serve_delivery_reports(self) -> None:
        while not self._closed.is_set():
            client = self._client
            client.producer.poll(0.05)
            if client.fatal:
                self._replace(client, client.fatal[0])
            for retired in list(self._retired):
                if retired.poll(0) == 0 and len(retired) == 0:
                    self._retired.remove(retired)

    def _new_client(self) -> _Client:
        fatal: list[KafkaError] = []  # not the client itself, which would make a reference cycle

        def on_error(error: KafkaError) -> None:
            if is_fatal(error):
                fatal.append(error)
            else:
                self._log.error(error)

        return _Client(Producer({**self._config, **self._log.config(), "error_cb": on_error}), fatal)

    def _replace(self, failed: _Client, error: KafkaError) -> None:
        """Swaps a client that failed fatally for a new one.

        An idempotent producer that meets an error it cannot recover from without risking
        duplicates or reordering (librdkafka's fatal errors) refuses every record after it; only
        a new client, with a new producer id, sends again.  The records the old client held fail
        their delivery reports, so their senders are told; it is polled until it reported all.
        """
        with self._replacing:
            if self._client is not failed or self._closed.is_set():
                return
            logger.error("The Kafka producer failed fatally (%s); sending through a new one.", error.str())
            self._retired.append(failed.producer)
            self._client = self._new_client()

    def send_async(self, record: Record) -> Future:
        """Starts sending a record.

        Returns:
          A future for the record's ``(partition, offset)``, failing with :class:`DeliveryFailed`.
        """
        future: Future = Future()

        def delivered(error, message):
            if error is None:
                future.set_result((message.partition(), message.offset()))
            else:
                future.set_exception(_not_acknowledged(record.topic, error))

        self._produce(record, delivered)
        return future

    def send(self, record: Record) -> tuple[int, int]:
        """Sends a record and waits until Kafka acknowledged it.

        Returns:
          The record's ``(partition, offset)``.

        Raises:
          DeliveryFailed: If the record was not acknowledged in time.
        """
        return self.send_many([record])[0]

    def send_many(self, records: list[Record]) -> list[tuple[int, int]]:
        """Sends records and waits once until Kafka acknowledged all of them.

        Returns:
          Each record's ``(partition, offset)``, in order.

        Raises:
          DeliveryFailed: If any record was not acknowledged in time.
        """
        acknowledgements = Acknowledgements([record.topic for record in records])
        for index, record in enumerate(records):
            self._produce(record, acknowledgements.reporter(index))
        # librdkafka fails each record after delivery.timeout.ms; the margin covers the report.
        return acknowledgements.wait(self.delivery_timeout_ms / 1000 + 5)

    def _produce(self, record: Record, on_delivery) -> None:
        """Hands a record to librdkafka, waiting (within the delivery timeout) while its queue is full."""
        if self._closed.is_set():
            raise DeliveryFailed("the producer is closed")

        def delivered(error, message, on_delivery=on_delivery, log=self._log):
            if error is None:
                log.ok()
            on_delivery(error, message)

        kwargs = {"key": record.key, "headers": record.headers, "on_delivery": delivered}
        if record.timestamp is not None:
            kwargs["timestamp"] = record.timestamp
        if record.partition is not None:
            kwargs["partition"] = record.partition
        deadline = None  # set when the queue is first found full: most records never need it
        replaced = False
        while True:
            client = self._client
            try:
                client.producer.produce(record.topic, record.value, **kwargs)
                return
            except BufferError:
                # The local queue is full; the poller frees it as deliveries complete.
                if deadline is None:
                    deadline = time.monotonic() + self.delivery_timeout_ms / 1000
                elif time.monotonic() > deadline:
                    raise DeliveryFailed(f"the producer queue stayed full for {self.delivery_timeout_ms} ms") from None
                time.sleep(0.005)
            except KafkaException as e:
                error = e.args[0]
                if is_fatal(error) and not replaced:
                    # librdkafka took nothing: the record goes once, through the new client.
                    self._replace(client, error)
                    replaced = True
                    continue
                raise DeliveryFailed(f"could not send a record to {record.topic}: {error.str()}") from None

    def close(self, timeout: float = 10) -> None:
        """Delivers what is queued (waiting at most ``timeout`` seconds) and stops the poller."""
        if self._closed.is_set():
            return
        remaining = self._client.producer.flush(timeout)
        if remaining:
            logger.warning("%d records were not delivered before the producer closed.", remaining)
        self._closed.set()
        self._poller.join()
        for retired in self._retired:
            retired.purge()
            retired.flush(0)  # fails what a replaced client still held, so its senders wake
        # Dropping the client destroys its librdkafka handle, which would otherwise keep
        # reconnecting (and logging) for as long as this object lives.
        self._client = None


__all__ = ["Acknowledgements", "DeliveryFailed", "DurableProducer", "Record", "is_fatal", "record_size"]
