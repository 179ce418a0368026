"""The reply side of request/response: one listener per process, reading a few result partitions.

:class:`ReplyBook` is the pure part: which result keys this process waits for, the results that
arrived for them, and who to wake.  :class:`ReplyListener` is the I/O part: a thread with a
consumer that is *assigned* partitions (no consumer group, so no rebalance can ever stall a reply)
and files every result record it reads into the book.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from .clientlog import ClientLog
from .consumer import poll_batch

logger = logging.getLogger(__name__)

#: Header holding a result's expiry, in epoch milliseconds.
EXPIRES_HEADER = "x-result-expires"

#: How far before a message's timestamp a catch-up read starts, for clock skew between hosts (ms).
CLOCK_SKEW_MS = 5_000


@dataclass
class _Entry:
    expires_at: int
    value: bytes | None = None
    #: Wanted before its request was sent, so the listener has read its partition since then.
    expected: bool = False
    waiters: list[Callable[[bytes], None]] = field(default_factory=list)


class ReplyBook:
    """Results this process waits for.  Thread-safe; no I/O.

    A key is *wanted* from the moment a request is sent (or a caller asks for it) until it
    expires.  Results for keys nobody here wants are dropped, so a process keeps only its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def want(self, key: str, expires_at: int, *, expected: bool = False) -> bool:
        """Marks a result key as wanted until ``expires_at`` (epoch ms).

        Parameters:
          expected: The request is about to be sent, and its reply partition is being read.

        Returns:
          Whether the key was expected, now or before.
        """
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(expires_at))
            entry.expires_at = max(entry.expires_at, expires_at)
            entry.expected = entry.expected or expected
            return entry.expected

    def file(self, key: str, value: bytes, expires_at: int, now: int) -> bool:
        """Files a result that was read.  Returns whether anyone here wanted it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or expires_at <= now:
                return False
            entry.value, entry.expires_at = value, expires_at
            waiters, entry.waiters = entry.waiters, []
        for wake in waiters:
            wake(value)
        return True

    def get(self, key: str) -> bytes | None:
        """Returns the result filed for a key, if it has arrived."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def wait(self, key: str, wake: Callable[[bytes], None], expires_at: int) -> bytes | None:
        """Returns the result if it is there; otherwise arranges for ``wake(result)`` and returns None."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(expires_at))
            if entry.value is not None:
                return entry.value
            entry.waiters.append(wake)
            return None

    def cancel(self, key: str, wake: Callable[[bytes], None]) -> None:
        """Stops waking ``wake`` for a key (its caller gave up)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and wake in entry.waiters:
                entry.waiters.remove(wake)

    def drop(self, key: str) -> None:
        """Forgets a result that was handed over, unless another caller still waits for it: a
        process that asks for many results keeps none of those it answered."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry.waiters:
                del self._entries[key]

    def expire(self, now: int) -> int:
        """Forgets every key past its expiry that nobody waits on.  Returns how many."""
        with self._lock:
            expired = [k for k, e in self._entries.items() if e.expires_at <= now and not e.waiters]
            for key in expired:
                del self._entries[key]
            return len(expired)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: What a reply listener sets itself, whatever the user's settings (``KafkaResultBackend`` refuses
#: a ``KAFKA_RDKAFKA_*`` variable that sets one of them, rather than ignore it).
LISTENER_OWNED_CONFIG = {
    # Never used to join a group: partitions are assigned, and nothing is committed.
    "group.id": "kafka-tasks-reply-listener",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    # Only reached if a start offset is ever invalid: reading more beats missing a reply.
    "auto.offset.reset": "earliest",
}

#: Why each is set: what the error that refuses it says (an ``auto.offset.reset`` of earliest is
#: let through, as the broker lets it through).
LISTENER_OWNED_SETTINGS = {
    key: "a reply listener reads its partitions by assignment, from where its requests need, and commits nothing"
    for key in LISTENER_OWNED_CONFIG
    if key != "auto.offset.reset"
}


def listener_config(config: dict) -> dict:
    """A reply listener's librdkafka settings: the cluster's ``config``, whose settings win over the
    listener's defaults, but not over what it owns (:data:`LISTENER_OWNED_CONFIG`)."""
    defaults = {"fetch.wait.max.ms": 100, "fetch.queue.backoff.ms": 0, "enable.partition.eof": False}
    return {**defaults, **config, **LISTENER_OWNED_CONFIG}


class ReplyListener:
    """A thread that reads result partitions into a :class:`ReplyBook`.

    Parameters:
      config(dict): librdkafka settings for the cluster.
      topic(str): The full name of the results topic.
      book(ReplyBook): Where results go.
    """

    def __init__(self, config: dict, topic: str, book: ReplyBook) -> None:
        self.topic = topic
        self.book = book
        self._log = ClientLog("reply listener")
        self._consumer = Consumer({**listener_config(config), **self._log.config()})
        self._lock = threading.Condition()
        #: partition -> the earliest record timestamp (ms) this listener has read it from.
        self._watched_since: dict[int, int] = {}
        self._requests: list[tuple[int, int]] = []
        #: How many requests were served: a request's ticket is its number.
        self._served = 0
        self._caught_up: dict[int, int] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kafka-reply-listener", daemon=True)
        self._thread.start()

    def watch(
        self, partition: int, since_ms: int, *, reread: bool = False, wait_caught_up: float = 0, patience: float = 30
    ) -> bool:
        """Makes sure ``partition`` is read from ``since_ms`` on (epoch ms, minus clock skew).

        Parameters:
          reread: Read it from ``since_ms`` again even if it was read from then on: results for
            keys nobody wanted yet when they were read were dropped.
          wait_caught_up: If positive, wait up to this many seconds until the listener has read the
            partition up to its end as of now, so a result already stored is filed on return.
          patience: How long to wait, in seconds, for the listener to start reading from ``since_ms``.

        Returns:
          Whether the listener reads the partition from ``since_ms`` on.
        """
        since_ms -= CLOCK_SKEW_MS
        with self._lock:
            covered = not reread and self._watched_since.get(partition, float("inf")) <= since_ms
            if not covered:
                self._requests.append((partition, since_ms))
                ticket = self._served + len(self._requests)
            if covered and not wait_caught_up:
                return True
            end = self._end_offset(partition) if wait_caught_up else None
            deadline = time.monotonic() + max(wait_caught_up, 0 if covered else patience)
            while not self._closed and (
                (not covered and self._served < ticket)
                or (end is not None and self._caught_up.get(partition, -1) < end)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return covered or self._served >= ticket

    def _end_offset(self, partition: int) -> int:
        try:
            return self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=5, cached=False)[
                1
            ]
        except KafkaException:
            return -1

    def _run(self) -> None:
        last_expiry = time.monotonic()
        while not self._closed:
            try:
                self._serve_requests()
            except KafkaException as e:
                # A topic created a moment ago may not be known yet: try again shortly.
                self._log.report(logging.WARNING, "assign", f"could not assign its partitions yet: {e}")
                time.sleep(0.2)
                continue
            records: list = []
            try:
                poll_batch(self._consumer, 500, 0.05, records.extend)
            except (KafkaException, RuntimeError) as e:
                if self._closed:
                    return
                self._log.report(logging.ERROR, "poll", f"could not poll, retrying: {e}")
                time.sleep(0.5)
                continue
            now = int(time.time() * 1000)
            progress = {}
            for record in records:
                if record.error() is not None:
                    continue
                progress[record.partition()] = record.offset() + 1
                try:
                    self._file(record, now)
                except Exception:
                    # This thread serves every waiter of the process: one bad record must not stop it.
                    logger.exception(
                        "Skipped result record %s/%d/%d.", record.topic(), record.partition(), record.offset()
                    )
            self._note_progress(progress)
            if time.monotonic() - last_expiry > 10:
                self.book.expire(now)
                last_expiry = time.monotonic()

    def _file(self, record, now: int) -> None:
        if record.key() is None:
            return
        headers = dict(record.headers() or [])
        expires_at = int(headers.get(EXPIRES_HEADER, b"0") or 0)
        self.book.file(record.key().decode(), record.value(), expires_at, now)

    def _note_progress(self, progress: dict[int, int]) -> None:
        if not progress:
            return
        with self._lock:
            for partition, position in progress.items():
                self._caught_up[partition] = max(self._caught_up.get(partition, -1), position)
            self._lock.notify_all()

    def _serve_requests(self) -> None:
        with self._lock:
            requests = list(self._requests)
        if not requests:
            return
        wanted: dict[int, int] = {}
        for partition, since_ms in requests:
            wanted[partition] = min(since_ms, wanted.get(partition, since_ms))
        # A topic created a moment ago may have no leaders yet; assigning it then can stall.
        metadata = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if (
            metadata is None
            or metadata.error is not None
            or any(metadata.partitions.get(p) is None or metadata.partitions[p].leader < 0 for p in wanted)
        ):
            raise KafkaException(f"the results topic {self.topic} is not ready")
        # The ends are read before the lookup: a reply written between the two is then at or after
        # its partition's end, never skipped.  (Read after, an end could already be past it.)
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
            for p in wanted
        }
        lookups = [TopicPartition(self.topic, p, max(ts, 0)) for p, ts in wanted.items()]
        offsets = self._consumer.offsets_for_times(lookups, timeout=10)
        fresh, rewind = [], []
        for tp in offsets:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset < 0:
                # Nothing that recent yet: start at the end read above, as a number.  OFFSET_END
                # would be resolved only when fetching starts, after a reply may have been written.
                tp.offset = ends[tp.partition]
            if tp.partition in self._watched_since:
                # Never forward: what lies between is not read yet, and may hold awaited results.
                tp.offset = min(tp.offset, self._caught_up.get(tp.partition, tp.offset))
                rewind.append(TopicPartition(self.topic, tp.partition, tp.offset))
            else:
                fresh.append(TopicPartition(self.topic, tp.partition, tp.offset))
        assigned = {tp.partition for tp in self._consumer.assignment()}
        leaving = [TopicPartition(self.topic, tp.partition) for tp in rewind if tp.partition in assigned]
        if leaving:
            # Re-assigning moves the position back even before the partition has fetched.  (Only
            # what is assigned: after a failed assign below, the retry finds it unassigned.)
            self._consumer.incremental_unassign(leaving)
        if fresh or rewind:
            self._consumer.incremental_assign(fresh + rewind)
        with self._lock:
            del self._requests[: len(requests)]
            self._served += len(requests)
            for partition, since_ms in wanted.items():
                self._watched_since[partition] = min(since_ms, self._watched_since.get(partition, since_ms))
            for tp in fresh + rewind:
                self._caught_up[tp.partition] = tp.offset
            self._lock.notify_all()

    def close(self) -> None:
        """Stops the thread and closes the consumer.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._thread.join(5)
        self._consumer.close()
