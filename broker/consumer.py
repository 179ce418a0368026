"""Dramatiq consumers on Kafka consumer groups: at-least-once with out-of-order acks.

One consumer group per queue.  The consumer thread is the only one that touches the underlying
client: it polls, pauses and resumes partitions, and commits.  Worker threads ack and nack
concurrently; they only mark offsets finished in an :class:`~broker.offsets.OffsetTracker`, and
the consumer thread commits each partition's contiguous finished prefix, asynchronously every
``commit_interval_ms`` and synchronously when partitions are revoked and on close.

Prefetch (messages handed out and not yet acked) is honoured exactly.  Records read ahead of it
wait in a bounded buffer; when that is full, every partition is paused while the consumer keeps
polling, so a long task never causes a ``max.poll.interval.ms`` eviction.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import count

import dramatiq
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from dramatiq.broker import MessageProxy
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

from . import messages
from .clientlog import ClientLog
from .delays import Action, DelayTiers
from .followups import FOLLOW_UPS
from .offsets import OffsetTracker
from .producer import DeliveryFailed, Record

logger = logging.getLogger(__name__)

#: Tells consumer objects apart, so an ack for a message of an earlier consumer is ignored.
_consumer_ids = count(1)

#: How many records a consumer reads ahead of what it hands out before it pauses its partitions.
#: Pausing and resuming restarts fetching, so it should happen once per many messages, not per ack.
READ_AHEAD = 1_000

#: How long a queue consumer's fetch may wait at the broker for records (ms): librdkafka's 500 ms
#: delayed the first message of a new queue by as much.
FIRST_FETCH_WAIT_MS = 100

#: The most records taken from the client in one poll.
MAX_BATCH = 500

#: How often a consumer measures the lag of its partitions (s), for the ops reports.
LAG_INTERVAL = 2.0


class KafkaMessageProxy(MessageProxy):
    """A message handed to Dramatiq, with where it came from in Kafka."""

    def __init__(self, message: dramatiq.Message, record, *, consumer_id: int, epoch: int) -> None:
        super().__init__(message)
        self._topic = record.topic()
        self._partition = record.partition()
        self._offset = record.offset()
        self._consumer_id = consumer_id
        self._epoch = epoch

    @property
    def kafka_position(self) -> tuple[str, int, int]:
        """The record's ``(topic, partition, offset)``."""
        return self._topic, self._partition, self._offset


class KafkaConsumer(dramatiq.Consumer):
    """Consumes one Dramatiq queue from its topic.

    Parameters:
      broker(KafkaBroker): The broker that owns this consumer.
      queue_name(str): The Dramatiq queue name.
      topics(list[str]): The full topic names to consume.
      group_id(str): The consumer group.
      prefetch(int): How many messages may be handed out and not yet acked.
      timeout(int): How long ``__next__`` may block, in milliseconds.
    """

    def __init__(self, broker, queue_name: str, topics: list[str], group_id: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        self.read_ahead = max(prefetch, READ_AHEAD)
        self.id = next(_consumer_ids)
        self.tracker = OffsetTracker()
        self._buffer: deque = deque()
        self._paused: set[tuple[str, int]] = set()
        self._last_commit = self._last_poll = time.monotonic()
        self._slot_freed = threading.Event()
        #: Messages behind the end of each owned partition, measured every LAG_INTERVAL (a new
        #: dict each time: other threads read it as it is).
        self.lag: dict[tuple[str, int], int] = {}
        self._lag_measured = 0.0
        #: Why this consumer must be replaced (set from any thread); see :meth:`_restart`.
        self._broken: str | None = None
        #: The thread that calls ``__next__``: Dramatiq's consumer thread.
        self._polling_thread: int | None = None
        self._closed = False
        self._log = ClientLog(f"consumer of {queue_name}")
        self._consumer = Consumer(
            {**self.client_config(broker, group_id), **self._log.config(), "on_commit": self._on_commit}
        )
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    @classmethod
    def client_config(cls, broker, group_id: str) -> dict:
        """Returns the librdkafka configuration of this kind of consumer."""
        # The first fetch of a partition just assigned is held by the broker for fetch.wait.max.ms,
        # though a record arrives meanwhile: a new queue's first message waited that long.
        return broker.consumer_config(group_id, defaults={"fetch.wait.max.ms": FIRST_FETCH_WAIT_MS})

    # Rebalances (called from inside poll, on the consumer thread) ---------------------------

    def _on_assign(self, consumer, partitions) -> None:
        for tp in partitions:
            self.tracker.assign((tp.topic, tp.partition))
        logger.debug("Assigned %s.", [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        self._commit(self.tracker.positions(keys), asynchronous=False)
        self._forget(keys)
        self._unpause(partitions)
        logger.debug("Revoked %s.", sorted(keys))

    def _on_lost(self, consumer, partitions) -> None:
        self._forget({(tp.topic, tp.partition) for tp in partitions})
        self._unpause(partitions)

    def _unpause(self, partitions) -> None:
        """Resumes partitions that are leaving this consumer.  librdkafka keeps a partition's pause
        across a revoke: assigned here again, it would come back paused, and, forgotten by
        ``_paused`` and ``_held``, never be resumed.
        """
        try:
            self._consumer.resume(partitions)
        except KafkaException as e:
            logger.debug("Could not resume leaving partitions: %s", e)

    def _forget(self, keys: set[tuple[str, int]]) -> None:
        for key in keys:
            self.tracker.revoke(key)
            self._paused.discard(key)
        self._buffer = deque(r for r in self._buffer if (r.topic(), r.partition()) not in keys)

    # Dramatiq's Consumer contract -------------------------------------------------------------

    def ack(self, message: KafkaMessageProxy) -> None:
        """Marks a message done, once the sends it owes (if any) are acknowledged by Kafka.

        Raises:
          ConnectionClosed: If one still cannot be sent.  Dramatiq's worker then tries the ack
            again every few seconds; meanwhile the message is not done, so never lost.
        """
        self._make_owed_sends(message)
        self._finish(message)

    def _make_owed_sends(self, message: KafkaMessageProxy) -> None:
        if message._consumer_id != self.id:
            return  # stale: its partition moved, and its new owner reads it again
        try:
            FOLLOW_UPS.settle(message)
        except DeliveryFailed as e:
            raise ConnectionClosed(f"what message {message.message_id} leads to is not in Kafka yet: {e}") from None

    def nack(self, message: KafkaMessageProxy) -> None:
        """Makes the sends the message owes, dead-letters it, then marks it done.

        Raises:
          ConnectionClosed: If Kafka did not take one of them, or the dead letter.  Dramatiq's worker then tries the
            nack again every few seconds; meanwhile the message is not done, so never lost.
        """
        try:
            self._make_owed_sends(message)
            self.broker.dead_letter(message, message._exception)
        except (DeliveryFailed, ConnectionClosed) as e:
            reason = f"could not dead-letter message {message.message_id}: {e}"
            if threading.get_ident() == self._polling_thread:
                # Dramatiq nacks a message for an unknown actor on its consumer thread, which must
                # not sit in a retry loop instead of polling: the consumer restarts and reads it again.
                self._restart(reason)
                return
            raise ConnectionClosed(reason) from None
        self._finish(message)

    def requeue(self, messages) -> None:
        # Not committing them is enough: they are delivered again from Kafka.
        pass

    def _finish(self, message: KafkaMessageProxy) -> None:
        if message._consumer_id != self.id or not self._finish_offset(
            (message._topic, message._partition), message._offset, message._epoch
        ):
            logger.debug("Ignoring a stale ack for %s.", message.message_id)

    def _finish_offset(self, key: tuple[str, int], offset: int, epoch: int) -> bool:
        finished = self.tracker.finish(key, offset, epoch)
        self._slot_freed.set()
        return finished

    def __next__(self) -> KafkaMessageProxy | None:
        if self._closed:
            raise ConnectionClosed("the consumer is closed")
        self._polling_thread = threading.get_ident()
        deadline = time.monotonic() + self.timeout / 1000
        while True:
            if self._broken is not None:
                raise ConnectionClosed(self._broken)
            self._commit_if_due()
            self._measure_lag_if_due()
            self._before_poll()
            if self.broker.is_paused(self.queue_name):
                # Paused by an operator: hand nothing out, and fetch nothing, but keep polling
                # (rebalances and max.poll.interval.ms need it); running messages finish.
                self._apply_backpressure(False)
                self._poll_paused(deadline)
                if time.monotonic() >= deadline:
                    return None
                continue
            while self._buffer and self.tracker.in_flight < self.prefetch:
                if self._broken is not None:
                    raise ConnectionClosed(self._broken)  # a message handed out now would run twice
                proxy = self._handle(self._buffer.popleft())
                if proxy is not None:
                    return proxy
            # Resume only once half the read-ahead is used, so pauses stay rare.
            self._apply_backpressure(len(self._buffer) < (self.read_ahead // 2 if self._paused else self.read_ahead))
            wait_ms = self._poll_ms(deadline)
            if self.tracker.in_flight >= self.prefetch:
                # Wait for an ack rather than in the client, which an ack cannot interrupt, but
                # still poll every so often: rebalances and max.poll.interval.ms need it.
                self._slot_freed.clear()
                if self.tracker.in_flight >= self.prefetch:
                    self._slot_freed.wait(wait_ms / 1000)
                if time.monotonic() - self._last_poll < self.broker.commit_interval_ms / 1000:
                    if time.monotonic() >= deadline:
                        return None
                    continue
                wait_ms = 0
            batch = max(1, min(self.read_ahead - len(self._buffer), MAX_BATCH))
            try:
                poll_batch(
                    self._consumer, batch, wait_ms / 1000, lambda records: self._buffer.extend(self._valid(records))
                )
            except KafkaException as e:
                raise ConnectionClosed(e) from None
            self._last_poll = time.monotonic()
            if time.monotonic() >= deadline and not (self._buffer and self.tracker.in_flight < self.prefetch):
                return None

    def _poll_paused(self, deadline: float) -> None:
        try:
            poll_batch(
                self._consumer,
                1,
                self._poll_ms(deadline) / 1000,
                lambda records: self._buffer.extend(self._valid(records)),
            )
        except KafkaException as e:
            raise ConnectionClosed(e) from None
        self._last_poll = time.monotonic()

    def _measure_lag_if_due(self) -> None:
        if time.monotonic() - self._lag_measured < LAG_INTERVAL:
            return
        self._lag_measured = time.monotonic()
        try:
            self.lag = self._measure_lag()
        except KafkaException as e:
            logger.debug("Could not measure the lag of %s: %s", self.queue_name, e)

    def _measure_lag(self) -> dict[tuple[str, int], int]:
        """Messages behind each owned partition's end: from the last finished message (or, with
        none finished, the fetch position less what waits in the buffer) to the end offset.  That
        is the one librdkafka last fetched, with no request, unless partitions are paused (then
        nothing is fetched, and the end is asked for)."""
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        cached = not (self._paused or self.broker.is_paused(self.queue_name))
        finished = self.tracker.positions()
        fetched = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assignment)}
        buffered: dict[tuple[str, int], int] = {}
        for record in self._buffer:
            key = (record.topic(), record.partition())
            buffered[key] = buffered.get(key, 0) + 1
        lag = {}
        for tp in assignment:
            key = (tp.topic, tp.partition)
            low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=cached)
            done = finished.get(key)
            if done is None and fetched.get(key, -1) >= 0:
                done = fetched[key] - buffered.get(key, 0)
            if done is None:  # nothing fetched yet (paused from the start): from the committed offset
                [committed] = self._consumer.committed([tp], timeout=1)
                done = committed.offset if committed.offset >= 0 else low
            if high >= 0 and done >= 0:
                lag[key] = max(0, high - done)
        return lag

    def _poll_ms(self, deadline: float) -> float:
        return max(0.0, min(deadline - time.monotonic(), self.broker.commit_interval_ms / 1000)) * 1000

    def _before_poll(self) -> None:
        """A hook for subclasses, run before each poll on the consumer thread."""

    def _valid(self, records):
        for record in records:
            error = record.error()
            if error is None:
                self._log.ok()
                yield record
            elif error.fatal():
                raise ConnectionClosed(error.str())
            elif error.code() != KafkaError._PARTITION_EOF:
                self._log.error(error)

    def _handle(self, record) -> KafkaMessageProxy | None:
        """Turns a record into a message to hand out, or deals with it and returns ``None``."""
        key = (record.topic(), record.partition())
        epoch = self.tracker.add(key, record.offset())
        if epoch is None:
            return None
        oversized = self._oversized(record)
        if oversized:
            self._dead_letter_record(record, epoch, oversized)
            return None
        try:
            message = messages.decode(record.value(), queue_name=self.queue_name, broker=self.broker)
        except messages.BadMessage as e:
            self._dead_letter_record(record, epoch, str(e))
            return None
        eta = message.options.get("eta")
        if eta is not None:
            if eta > _now_ms():
                # Due later (another producer wrote it here): through the delay tiers, not
                # Dramatiq's in-memory delay queue, which would hold back every commit behind it.
                self._delay(record, message, epoch)
                return None
            # Due: run now, rather than have Dramatiq move it to its queue once more.
            message = message.copy()  # with options of its own
            del message.options["eta"]
        return KafkaMessageProxy(message, record, consumer_id=self.id, epoch=epoch)

    def _delay(self, record, message: dramatiq.Message, epoch: int) -> None:
        """Moves a message with an eta in the future to its delay tier; done once Kafka has it."""
        try:
            moved = self.broker.record_of(message.copy(queue_name=dq_name(self.queue_name)))
        except messages.BadMessage as e:
            self._dead_letter_record(record, epoch, str(e))
            return
        self._forward(record, dataclasses.replace(moved, headers=record.headers()), epoch, "move to its delay tier")

    def _forward(self, record, forwarded: Record, epoch: int, what: str) -> None:
        """Writes ``forwarded`` for ``record``, and finishes the record once Kafka has it; if Kafka
        refuses, the consumer restarts and reads the record again.  A record too large to be
        written again (another producer's, with large headers or key) is dead-lettered instead:
        refused for good, it would be read again forever."""
        if forwarded.size > self.broker.max_record_bytes:
            reason = (
                f"oversized message: {forwarded.size} bytes > {self.broker.max_record_bytes} bytes, too large to {what}"
            )
            self._dead_letter_record(record, epoch, reason)
            return
        key = (record.topic(), record.partition())
        future = self.broker.producer.send_async(forwarded)

        def forwarded_done(future):
            if future.exception() is None:
                self._finish_offset(key, record.offset(), epoch)
            else:
                self._restart(
                    f"a message of {record.topic()} could not {what} ({forwarded.topic}): {future.exception()}"
                )

        future.add_done_callback(forwarded_done)

    def _oversized(self, record) -> str | None:
        """Returns the dead-letter reason of a record too large to decode, else ``None``."""
        size, limit = len(record.value() or b""), self.broker.max_message_bytes
        return f"oversized message: {size} bytes > {limit} bytes" if size > limit else None

    def _dead_letter_record(self, record, epoch: int, reason: str) -> None:
        try:
            self.broker.dead_letter_record(self.queue_name, record, reason)
        except DeliveryFailed as e:
            self._restart(f"could not dead-letter a record of {record.topic()}: {e}")
            return
        self._finish_offset((record.topic(), record.partition()), record.offset(), epoch)

    def _restart(self, reason: str) -> None:
        """Has ``__next__`` raise ``ConnectionClosed``: Dramatiq's consumer thread then closes this
        consumer, which commits each partition's finished prefix (so not past the record that
        failed) and leaves the group, and opens another, which reads that record again.

        For a record whose fate could not be made durable on the consumer's side (a dead letter of
        an undecodable record, a delay hop): left unfinished in this consumer, it would hold back
        its partition's commits and a prefetch slot until the worker restarted.
        """
        logger.warning("Restarting the consumer of %s: %s", self.queue_name, reason)
        self._broken = reason
        self._slot_freed.set()

    # Prefetch and commits ---------------------------------------------------------------------

    def _apply_backpressure(self, has_room: bool) -> None:
        if has_room and self._paused:
            self._consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        elif not has_room:
            assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            newly = assigned - self._paused
            if newly:
                self._consumer.pause([TopicPartition(t, p) for t, p in newly])
                self._paused |= newly

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.broker.commit_interval_ms / 1000:
            self._commit(self.tracker.to_commit(), asynchronous=True)

    def _commit(self, positions: dict, *, asynchronous: bool) -> None:
        self._last_commit = time.monotonic()
        if not positions:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as e:
            logger.warning("Commit failed on %s: %s", self.queue_name, e.args[0].str())
            return
        self.tracker.mark_committed(positions)

    def _on_commit(self, error, partitions) -> None:
        """Called from inside poll for each commit: a position whose commit failed is committed again."""
        failed = {(tp.topic, tp.partition): tp.offset for tp in partitions if error is not None or tp.error is not None}
        if failed:
            logger.warning("Commit failed on %s (%s); it is made again.", self.queue_name, error or "partition errors")
            self.tracker.commit_failed(failed)

    def close(self) -> None:
        """Commits the finished prefix of every partition and leaves the group.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._commit(self.tracker.positions(), asynchronous=False)
        finally:
            self._consumer.close()


#: How long a delay consumer's fetch may wait at the broker for records; a due message can be
#: this late, on top of its tier's granularity.
DUE_FETCH_WAIT_MS = 50


class DelayConsumer(KafkaConsumer):
    """Consumes a delay queue's tier topics and hands out only messages that are due.

    A partition whose head is not due is paused and rewound to the head, and resumed when the
    head's time comes; a head that has waited its tier's delay hops to a shorter tier.  See
    :mod:`broker.delays`.
    """

    def __init__(
        self, broker, queue_name: str, tiers: DelayTiers, topics: list[str], group_id: str, prefetch: int, timeout: int
    ) -> None:
        self.tiers = tiers
        self._tier_of_topic = {broker.settings.topic(tier.topic(queue_name)): tier for tier in tiers.tiers}
        self._held: dict[tuple[str, int], int] = {}
        super().__init__(broker, queue_name, topics, group_id, prefetch, timeout)

    @classmethod
    def client_config(cls, broker, group_id: str) -> dict:
        # A partition resumed when its head comes due is fetched only once the fetch in flight
        # returns, which an idle broker holds for fetch.wait.max.ms (librdkafka: 500 ms).
        return broker.consumer_config(group_id, defaults={"fetch.wait.max.ms": DUE_FETCH_WAIT_MS})

    def _forget(self, keys) -> None:
        for key in keys:
            self._held.pop(key, None)
        super()._forget(keys)

    def _measure_lag(self) -> dict[tuple[str, int], int]:
        return {}  # delayed messages wait by design; the ops pages read their tiers from Kafka

    def _poll_ms(self, deadline: float) -> float:
        wait_ms = super()._poll_ms(deadline)
        if self._held:
            wait_ms = min(wait_ms, max(0, min(self._held.values()) - _now_ms()))
        return wait_ms

    def _before_poll(self) -> None:
        now = _now_ms()
        due = [key for key, wake_at in self._held.items() if wake_at <= now]
        for key in due:
            del self._held[key]
        if due:
            # Resumed here, not by _apply_backpressure: held partitions are not in self._paused.
            self._consumer.resume([TopicPartition(t, p) for t, p in due])

    def _apply_backpressure(self, has_room: bool) -> None:
        if not has_room:
            held = set(self._held)
            self._paused |= held
            super()._apply_backpressure(has_room)
            self._paused -= held
        else:
            super()._apply_backpressure(has_room)

    def _handle(self, record) -> KafkaMessageProxy | None:
        key = (record.topic(), record.partition())
        if key in self._held:
            return None  # Read ahead of a held head; it is read again after the rewind.
        tier = self._tier_of_topic[record.topic()]
        try:
            reason = self._oversized(record)
            if reason is None:
                message = messages.decode(record.value(), queue_name=self.queue_name, broker=self.broker)
                # Without an eta (null, or no number), it is due now, as Dramatiq reads it.
                eta = int(message.options.get("eta", _now_ms()))
                reason = self._unmovable(record, message)
        except messages.BadMessage as e:
            reason = f"delayed {e}"
        if reason is not None:
            epoch = self.tracker.add(key, record.offset())
            if epoch is not None:
                self._dead_letter_record(record, epoch, reason)
            return None
        decision = self.tiers.decide(tier, written_at=record.timestamp()[1], eta=eta, now=_now_ms())
        if decision.action is Action.WAIT:
            self._hold(record, decision.wake_at)
            return None
        epoch = self.tracker.add(key, record.offset())
        if epoch is None:
            return None
        if decision.action is Action.HOP:
            self._hop(record, decision.tier, epoch)
            return None
        return KafkaMessageProxy(message, record, consumer_id=self.id, epoch=epoch)

    def _hold(self, record, wake_at: int) -> None:
        tp = TopicPartition(record.topic(), record.partition(), record.offset())
        key = (tp.topic, tp.partition)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        self._held[key] = wake_at
        # Held, it is resumed by _before_poll when due, never by _apply_backpressure: resumed
        # early, it would fetch past the head, and those records would be dropped above.
        self._paused.discard(key)
        self._buffer = deque(r for r in self._buffer if (r.topic(), r.partition()) != key)

    def _unmovable(self, record, message: dramatiq.Message) -> str | None:
        """Returns why a due message could not be moved to its queue (too large to send), or None.
        Dramatiq's consumer thread moves it; refused there, it would be read again and again."""
        size, limit = len(record.value() or b""), self.broker.send_limit(message)
        return (
            f"oversized message: {size} bytes > {limit} bytes, too large to move to its queue" if size > limit else None
        )

    def _hop(self, record, tier, epoch: int) -> None:
        topic = self.broker.settings.topic(tier.topic(self.queue_name))
        hop = Record(topic, record.value(), key=record.key(), headers=record.headers(), timestamp=_now_ms())
        self._forward(record, hop, epoch, "hop to a shorter delay tier")


def poll_batch(consumer: Consumer, batch: int, timeout: float, take: Callable[[list], object]) -> None:
    """Hands ``take`` up to ``batch`` records: as soon as one arrives (or ``timeout`` seconds
    pass, with none), then those already there.  ``Consumer.consume`` alone waits for a full batch
    or the whole timeout, which would add its timeout to every message's latency on a quiet queue.

    The first record is taken before the rest are consumed, because consuming may run a rebalance
    callback: that callback must find the record where it forgets its revoked partition's records.
    """
    first = consumer.poll(timeout)
    if first is None:
        return
    take([first])
    if batch > 1:
        take(consumer.consume(num_messages=batch - 1, timeout=0))


def _now_ms() -> int:
    return int(time.time() * 1000)
