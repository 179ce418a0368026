"""Share-group consumption (KIP-932, "queues for Kafka"): more worker processes than partitions.

A queue named in ``KafkaBroker(share_queues=...)`` is read by a *share group* instead of a
consumer group: the broker hands each record of a partition to one of many consumers, locks it for
a while (the record lock), counts its deliveries, and takes an acknowledgement per record.  So any
number of worker processes share a queue's work, whatever its partition count.  A preview, as the
client's ``ShareConsumer`` is.

``ShareConsumer`` is not thread-safe, so the consumer thread owns it: worker threads' acks and
nacks are handed to it through a queue.  An ack is ``ACCEPT``; a nack writes the dead letter, as
for any queue, then ``REJECT``s; a requeue (a graceful stop) is ``RELEASE``, and the record goes
to another consumer.  The client takes no record of a new poll before every record of the last one
is acknowledged: a consumer hands out a batch (at most its prefetch), and polls again once the
whole batch is done.

The broker counts deliveries; a record delivered as often as the group's limit (because its
workers kept dying) is dead-lettered with the reason "delivery count exceeded" before its last
run, never dropped silently (Kafka archives a record past its limit without telling anyone).
A task that runs longer than the record lock may be given to another consumer too: the lock is
set at the group's creation (``share_lock_ms``), and a task that outlives it is logged, once.

Delays and retries keep their classic consumer groups: the delay tiers hand due messages to the
queue's topic, which the share group reads.  ``join()`` waits until this process's share consumers
acknowledged every record of the topic: tests run their workers in the process that joins.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from itertools import count

import dramatiq
from confluent_kafka import AcknowledgeType, KafkaException, ShareConsumer
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

from . import messages
from .clientlog import ClientLog
from .consumer import KafkaMessageProxy, _now_ms
from .followups import FOLLOW_UPS
from .producer import DeliveryFailed

logger = logging.getLogger(__name__)

#: How long a share group locks a record it handed out, by default (ms): Kafka's broker default
#: (30 s) is too short for many tasks; Kafka caps it at 60 s unless the broker allows more
#: (``group.share.max.record.lock.duration.ms``).
DEFAULT_LOCK_MS = 60_000

#: How many deliveries a record gets by default, the last of which dead-letters it (Kafka: 2 to 10).
DEFAULT_DELIVERY_LIMIT = 5

#: The suffix of a share-queue's group id (a group is either a consumer group or a share group).
SHARE_GROUP_SUFFIX = ".share"

_consumer_ids = count(1)


def share_group_configs(lock_ms: int, delivery_limit: int) -> dict[str, str]:
    """The group configs a share queue's group is created with: tasks sent before its first
    consumer are read (``earliest``), with the broker option's lock and delivery limit."""
    return {
        "share.auto.offset.reset": "earliest",
        "share.record.lock.duration.ms": str(lock_ms),
        "share.delivery.count.limit": str(delivery_limit),
    }


class ShareProgress:
    """The records of share queues this process's consumers acknowledged, for :meth:`join`.

    Per partition, the offsets acknowledged form a contiguous prefix from the partition's start,
    and a set of those beyond it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple[str, int], tuple[int, set[int]]] = {}

    def done(self, topic: str, partition: int, offset: int, start: int = 0) -> None:
        with self._lock:
            upto, beyond = self._done.get((topic, partition), (start, set()))
            beyond.add(offset)
            while upto in beyond:
                beyond.discard(upto)
                upto += 1
            self._done[(topic, partition)] = (upto, beyond)

    def covers(self, topic: str, partition: int, start: int, end: int) -> bool:
        """Whether every offset in ``[start, end)`` was acknowledged."""
        with self._lock:
            upto, beyond = self._done.get((topic, partition), (start, set()))
        return max(upto, start) >= end or all(o in beyond for o in range(max(upto, start), end))


class KafkaShareConsumer(dramatiq.Consumer):
    """Consumes one Dramatiq queue through a share group.

    Parameters:
      broker(KafkaBroker): The broker that owns this consumer.
      queue_name(str): The Dramatiq queue name.
      topic(str): The queue's full topic name.
      group_id(str): The share group (full name).
      prefetch(int): How many messages may be handed out and not yet acked: the batch size.
      timeout(int): How long ``__next__`` may block, in milliseconds.
    """

    def __init__(self, broker, queue_name: str, topic: str, group_id: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.topic = topic
        self.prefetch = prefetch
        self.timeout = timeout
        self.id = next(_consumer_ids)
        self._batch: list = []
        #: (partition, offset) -> (record, handed out at, epoch s)
        self._outstanding: dict[tuple[int, int], tuple] = {}
        self._acks: queue.SimpleQueue = queue.SimpleQueue()
        self._acked = threading.Event()
        self._closed = False
        self._warned_lock = False
        self._log = ClientLog(f"share consumer of {queue_name}")
        self._consumer = ShareConsumer(
            {
                **broker.settings.client_config(),
                **self._log.config(),
                "group.id": group_id,
                "share.acknowledgement.mode": "explicit",
                "max.poll.records": max(1, prefetch),
            }
        )
        self._consumer.subscribe([topic])

    # Worker threads: hand decisions over -------------------------------------------------------

    def ack(self, message: KafkaMessageProxy) -> None:
        """Accepts a message, once the sends it owes are acknowledged by Kafka.

        Raises:
          ConnectionClosed: If one still cannot be sent (Dramatiq's worker tries the ack again).
        """
        if message._consumer_id != self.id:
            return  # released when its consumer closed: another consumer has it
        try:
            FOLLOW_UPS.settle(message)
        except DeliveryFailed as e:
            raise ConnectionClosed(f"what message {message.message_id} leads to is not in Kafka yet: {e}") from None
        self._decide(message, AcknowledgeType.ACCEPT)

    def nack(self, message: KafkaMessageProxy) -> None:
        """Dead-letters a message, as for any queue, then rejects it.

        Raises:
          ConnectionClosed: If Kafka did not take the dead letter (the nack is tried again).
        """
        if message._consumer_id != self.id:
            return
        try:
            FOLLOW_UPS.settle(message)
            self.broker.dead_letter(message, message._exception)
        except (DeliveryFailed, ConnectionClosed) as e:
            raise ConnectionClosed(f"could not dead-letter message {message.message_id}: {e}") from None
        self._decide(message, AcknowledgeType.REJECT)

    def requeue(self, messages) -> None:
        """Releases messages handed out and not run (a worker that stops): another consumer gets them."""
        for message in messages:
            if getattr(message, "_consumer_id", None) == self.id:
                self._decide(message, AcknowledgeType.RELEASE)

    def _decide(self, message: KafkaMessageProxy, decision) -> None:
        self._acks.put(((message._partition, message._offset), decision))
        self._acked.set()

    # The consumer thread: the only one that touches the client ----------------------------------

    def __next__(self) -> KafkaMessageProxy | None:
        if self._closed:
            raise ConnectionClosed("the consumer is closed")
        deadline = time.monotonic() + self.timeout / 1000
        while True:
            self._apply_decisions()
            while self._batch:
                proxy = self._hand_out(self._batch.pop(0))
                if proxy is not None:
                    return proxy
            if self._outstanding:
                # The next poll waits for the whole batch: meanwhile, wait for acks.
                self._acked.clear()
                if self._acks.empty():
                    self._acked.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            else:
                self._poll(max(0.0, min(0.1, deadline - time.monotonic())))
            if time.monotonic() >= deadline and not self._batch:
                return None

    def _poll(self, timeout: float) -> None:
        try:
            records = self._consumer.poll(timeout)
        except KafkaException as e:
            raise ConnectionClosed(e) from None
        for record in records or ():
            error = record.error()
            if error is None:
                self._log.ok()
                self._outstanding[(record.partition(), record.offset())] = (record, None)
                self._batch.append(record)
            elif error.fatal():
                raise ConnectionClosed(error.str())
            else:
                self._log.error(error)

    def _apply_decisions(self) -> None:
        decided = False
        while True:
            try:
                key, decision = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._outstanding.pop(key, None)
            if entry is None:
                continue
            record, handed_at = entry
            self._acknowledge(record, decision)
            decided = True
            if handed_at is not None and decision != AcknowledgeType.RELEASE:
                self._check_lock(record, handed_at)
        if decided:
            try:
                self._consumer.commit_async()
            except KafkaException as e:
                logger.warning("Could not commit acknowledgements on %s: %s", self.queue_name, e)

    def _acknowledge(self, record, decision) -> None:
        try:
            self._consumer.acknowledge(record, decision)
        except Exception as e:  # its lock expired meanwhile: another consumer has it now
            logger.warning("Could not acknowledge a record of %s (%s): it is delivered again.", self.queue_name, e)
            return
        if decision != AcknowledgeType.RELEASE:
            self.broker.share_progress.done(record.topic(), record.partition(), record.offset())

    def _check_lock(self, record, handed_at: float) -> None:
        held_ms = (time.monotonic() - handed_at) * 1000
        if held_ms > self.broker.share_lock_ms and not self._warned_lock:
            self._warned_lock = True
            logger.warning(
                "A task of %s ran %.0f s, longer than its record lock (%.0f s): another worker may have run it "
                "too. Raise share_lock_ms (the broker allows up to group.share.max.record.lock.duration.ms).",
                self.queue_name,
                held_ms / 1000,
                self.broker.share_lock_ms / 1000,
            )

    def _hand_out(self, record) -> KafkaMessageProxy | None:
        """Turns a record into a message to hand out, or settles it here and returns ``None``."""
        key = (record.partition(), record.offset())
        reason = self._oversized(record) or self._over_delivered(record)
        message = None
        if reason is None:
            try:
                message = messages.decode(record.value(), queue_name=self.queue_name, broker=self.broker)
            except messages.BadMessage as e:
                reason = str(e)
        if reason is not None:
            self._settle_here(record, key, reason)
            return None
        eta = message.options.get("eta")
        if eta is not None:
            if eta > _now_ms():
                self._delay(record, key, message)
                return None
            message = message.copy()
            del message.options["eta"]
        self._outstanding[key] = (record, time.monotonic())
        return KafkaMessageProxy(message, record, consumer_id=self.id, epoch=0)

    def _oversized(self, record) -> str | None:
        size, limit = len(record.value() or b""), self.broker.max_message_bytes
        return f"oversized message: {size} bytes > {limit} bytes" if size > limit else None

    def _over_delivered(self, record) -> str | None:
        deliveries, limit = record.delivery_count(), self.broker.share_delivery_limit
        if deliveries >= limit:
            return (
                f"delivery count exceeded: delivered {deliveries} times (the share group's limit), its earlier "
                "deliveries' workers died or their locks expired"
            )
        return None

    def _settle_here(self, record, key, reason: str) -> None:
        """Dead-letters a record this consumer will not hand out, then rejects it; if Kafka refuses
        the dead letter, releases it (it comes back), never drops it."""
        try:
            self.broker.dead_letter_record(self.queue_name, record, reason)
        except DeliveryFailed as e:
            logger.warning("Could not dead-letter a record of %s (released, it comes back): %s", self.queue_name, e)
            self._decide_now(key, AcknowledgeType.RELEASE)
            return
        self._decide_now(key, AcknowledgeType.REJECT)

    def _delay(self, record, key, message: dramatiq.Message) -> None:
        """A message due later (another producer wrote it here): to its delay tier, then accepted."""
        try:
            self.broker.producer.send(self.broker.record_of(message.copy(queue_name=dq_name(self.queue_name))))
        except (DeliveryFailed, messages.BadMessage) as e:
            logger.warning("Could not move a delayed message of %s to its tier (released): %s", self.queue_name, e)
            self._decide_now(key, AcknowledgeType.RELEASE)
            return
        self._decide_now(key, AcknowledgeType.ACCEPT)

    def _decide_now(self, key, decision) -> None:
        self._acks.put((key, decision))

    def close(self) -> None:
        """Applies the decisions made, releases what is left (another consumer gets it), and leaves
        the share group.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._apply_decisions()
        for record, _ in list(self._outstanding.values()):
            self._acknowledge(record, AcknowledgeType.RELEASE)
        self._outstanding.clear()
        self._batch.clear()
        try:
            self._consumer.commit_sync()
        except KafkaException as e:
            logger.warning("Could not commit acknowledgements of %s on close: %s", self.queue_name, e)
        finally:
            self._consumer.close()
