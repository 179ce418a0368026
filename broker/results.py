"""``KafkaResultBackend``: actor results over Kafka, for request/response between services.

Design.  Results go to one topic, ``dramatiq-results`` (with ``KAFKA_PREFIX``), keyed by
Dramatiq's result key.  Each process that asks for results picks one *reply partition* of that
topic at random and reads it with an assigned consumer: there is no consumer group on the reply
path, so no rebalance ever stalls a reply, and a process reads only ``1/partitions`` of all
results.  The :class:`ReplyRouting` middleware writes the requester's reply partition into every
result-backed message it sends (``options["reply_partition"]``), and the worker that stores the
result writes it to that partition.  The requester's listener files results in memory for the
keys it sent and wakes the callers waiting on them at once, with no sleep-polling.

Without ``ReplyRouting``, or for a message sent by another process (a restarted requester, say),
the result goes to the partition its key hashes to, and the listener starts reading that
partition from the message's timestamp, so a result stored before anyone asked is still found.

Results expire after their ``result_ttl``: expired records are ignored, and the topic's retention
is the backend's ``result_ttl``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import threading
import time
import zlib

import dramatiq
from confluent_kafka.admin import AdminClient
from dramatiq.results import ResultBackend, ResultMissing, Results, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT
from dramatiq.results.middleware import DEFAULT_RESULT_TTL
from dramatiq.results.result import wrap_exception, wrap_result

from .clientlog import ClientLog
from .followups import FOLLOW_UPS
from .producer import OWNED_SETTINGS as PRODUCER_OWNED_SETTINGS
from .producer import DeliveryFailed, DurableProducer, Record
from .replies import EXPIRES_HEADER, LISTENER_OWNED_SETTINGS, ReplyBook, ReplyListener
from .settings import KafkaSettings, refuse_owned, require_earliest_reset
from .topics import TopicSpec, ensure_topics

#: The message option that names the partition a result must be written to.
REPLY_PARTITION = "reply_partition"

#: The follow-up name of a failed message's result: stored before its nack, not again after it.
_FAILURE_RESULT = "failure result"


class KafkaResultBackend(ResultBackend):
    """A result backend on Kafka.  Use it with Dramatiq's ``Results`` middleware, and add
    :class:`ReplyRouting` so that replies come to a partition the requester reads.

    Parameters:
      settings(KafkaSettings): Cluster settings; by default from the environment, like
        ``KafkaBroker``, with ``KafkaSettings`` fields as keyword arguments taking precedence.
      namespace(str): Dramatiq's result namespace, part of every result key.
      topic(str): The results topic, without the prefix.
      partitions(int): Its partition count when created.
      replication_factor(int): Its replication factor; -1 is the cluster default.
      result_ttl(int): The topic's retention, in ms: the longest ``result_ttl`` actors use.
      encoder(Encoder): How results are serialized (Dramatiq's JSON encoder by default).
    """

    def __init__(
        self,
        *,
        settings: KafkaSettings | None = None,
        namespace: str = "dramatiq-results",
        topic: str = "dramatiq-results",
        partitions: int = 16,
        replication_factor: int = -1,
        result_ttl: int = DEFAULT_RESULT_TTL,
        encoder=None,
        **settings_overrides,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder)
        self.settings = settings or KafkaSettings.from_env(**settings_overrides)
        refuse_owned(self.settings, {**PRODUCER_OWNED_SETTINGS, **LISTENER_OWNED_SETTINGS})
        require_earliest_reset(self.settings, "a reply listener must read a partition from its start, or miss replies")
        self.topic = self.settings.topic(topic)
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.result_ttl = result_ttl
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._producer: DurableProducer | None = None
        self._listener: ReplyListener | None = None
        self._book = ReplyBook()
        self._reply_partition = 0

    def __repr__(self) -> str:
        return f"KafkaResultBackend(topic={self.topic!r}, settings={self.settings!r})"

    # Per-process clients ----------------------------------------------------------------------

    def _clients(self) -> None:
        """Creates this process's producer (and topic) after a fork, at first use."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self.ensure_topic()
            self._producer = DurableProducer(self.settings.client_config())
            self._listener = None
            self._book = ReplyBook()
            self._reply_partition = random.randrange(self.partitions)
            self._pid = os.getpid()

    def ensure_topic(self) -> list[str]:
        """Creates the results topic if it is missing, with retention matching ``result_ttl``.

        Raises:
          MissingTopics: If it is missing and the cluster does not let this client create it.
        """
        retention = {"retention.ms": str(self.result_ttl), "segment.ms": str(min(self.result_ttl, 3_600_000))}
        spec = TopicSpec(self.topic, self.partitions, self.replication_factor, retention)
        admin = AdminClient({**self.settings.client_config(), **ClientLog("admin client").config()})
        return ensure_topics(admin, [spec])

    @property
    def listener(self) -> ReplyListener:
        """This process's reply listener, started on first use, reading its reply partition."""
        return self._listen()

    def _listen(self) -> ReplyListener:
        self._clients()
        with self._lock:
            if self._listener is None:
                self._listener = ReplyListener(self.settings.client_config(), self.topic, self._book)
                fresh = True
            else:
                fresh = False
        if fresh:
            self._listener.watch(self._reply_partition, int(time.time() * 1000))
        return self._listener

    @property
    def reply_partition(self) -> int:
        """The partition this process reads its replies from."""
        self._clients()
        return self._reply_partition

    def expect(self, message: dramatiq.Message, ttl: int | None = None) -> int:
        """Registers interest in a message's result before it is sent; returns the reply partition."""
        self._listen()  # reading the reply partition before the message leaves
        self._book.want(self.build_message_key(message), _now() + (ttl or self.result_ttl), expected=True)
        return self._reply_partition

    def _partition_for(self, message, message_key: str) -> int:
        partition = message.options.get(REPLY_PARTITION)
        if isinstance(partition, int) and 0 <= partition < self.partitions:
            return partition
        return zlib.crc32(message_key.encode()) % self.partitions

    # Storing (worker side) --------------------------------------------------------------------

    def store_result(self, message, result, ttl: int) -> None:
        self._send(message, wrap_result(result), ttl)

    def store_exception(self, message, exception: Exception, ttl: int) -> None:
        # Stored before the nack already, when ReplyRouting did (see store_failure).
        self._send(message, wrap_exception(exception), ttl, once=_FAILURE_RESULT)

    def store_failure(self, message, exception: Exception, ttl: int) -> None:
        """Stores a failed message's exception as its result, owed by the message: until Kafka
        has it, the message's nack raises and is tried again, so the requester never waits for
        its timeout instead of the failure.  The Results middleware's own store of it, after the
        nack, is then skipped.

        Raises:
          DeliveryFailed: If Kafka refused it (the message owes it).
        """
        self._send(message, wrap_exception(exception), ttl, once=_FAILURE_RESULT)

    def _send(self, message, wrapped, ttl: int, *, once: str | None = None) -> None:
        self._clients()
        key = self.build_message_key(message)
        record = Record(
            self.topic,
            self.encoder.encode(wrapped),
            key=key.encode(),
            headers=[(EXPIRES_HEADER, str(_now() + ttl).encode())],
            partition=self._partition_for(message, key),
        )
        # Dramatiq's Results middleware only logs a refusal; the message being processed owes it.
        FOLLOW_UPS.send(functools.partial(self._producer.send, record), once=once)

    # Getting (requester side) -----------------------------------------------------------------

    def _prepare_wait(self, message, *, caught_up: float, patience: float) -> str:
        key = self.build_message_key(message)
        listener = self.listener
        partition = self._partition_for(message, key)
        expires_at = _now() + self.result_ttl
        if self._book.want(key, expires_at):
            if caught_up:
                listener.watch(partition, _now(), wait_caught_up=caught_up)
        # Sent by another process, or before this one listened, or the key was forgotten: its
        # result may have been read and dropped, so read its partition again from the message on.
        # Once that is under way, the key counts as expected: its result cannot be dropped now.
        elif listener.watch(
            partition, message.message_timestamp, reread=True, wait_caught_up=caught_up, patience=patience
        ):
            self._book.want(key, expires_at, expected=True)
        return key

    def get_result(self, message, *, block: bool = False, timeout: int | None = None):
        """Returns a message's result as soon as it arrives.

        Raises:
          ResultMissing: When ``block`` is False and the result isn't there.
          ResultTimeout: When ``timeout`` ms (10 s by default) pass without a result.
          ResultFailure: When the actor failed.
        """
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout / 1000
        key = self._prepare_wait(message, caught_up=0 if block else min(timeout / 1000, 5), patience=timeout / 1000)
        if not block:
            value = self._book.get(key)
            if value is None:
                raise ResultMissing(message)
            return self.unwrap_result(self.encoder.decode(value))
        arrived = threading.Event()
        box: list[bytes] = []

        def wake(value: bytes) -> None:
            box.append(value)
            arrived.set()

        value = self._book.wait(key, wake, _now() + self.result_ttl)
        if value is None:
            try:
                if not arrived.wait(max(0.0, deadline - time.monotonic())):
                    raise ResultTimeout(message)
            finally:
                self._book.cancel(key, wake)  # also when interrupted: a waiter left behind never expires
            value = box[0]
        self._book.drop(key)  # handed over: asked again, it is read again from Kafka
        return self.unwrap_result(self.encoder.decode(value))

    async def get_result_async(self, message, *, timeout: int | None = None):
        """Awaits a message's result without blocking the event loop.

        Raises:
          ResultTimeout: When ``timeout`` ms (10 s by default) pass without a result.
          ResultFailure: When the actor failed.
        """
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        deadline = time.monotonic() + timeout / 1000
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(
            None, lambda: self._prepare_wait(message, caught_up=0, patience=timeout / 1000)
        )
        future = loop.create_future()

        def wake(value: bytes) -> None:
            try:
                loop.call_soon_threadsafe(lambda: future.done() or future.set_result(value))
            except RuntimeError:
                pass  # the loop is closed: nobody awaits this result any more

        value = self._book.wait(key, wake, _now() + self.result_ttl)
        if value is None:
            try:
                value = await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise ResultTimeout(message) from None
            finally:
                self._book.cancel(key, wake)  # also when cancelled: a waiter left behind never expires
        self._book.drop(key)
        return self.unwrap_result(self.encoder.decode(value))

    def close(self) -> None:
        """Stops this process's listener and delivers pending results."""
        with self._lock:
            listener, self._listener = self._listener, None
            producer, self._producer = self._producer, None
            mine = self._pid == os.getpid()
            self._pid = None
        if mine and listener is not None:
            listener.close()
        if mine and producer is not None:
            producer.close()


class ReplyRouting(dramatiq.Middleware):
    """Routes the results of the messages this process sends to its own reply partition, on a
    broker other than ``KafkaBroker`` (which routes them itself, see :func:`route_reply`).

    Add it next to ``Results(backend=...)``.  It marks every message of a result-storing actor
    with ``reply_partition`` and registers the process's interest in its result before the
    message leaves, so the reply is read even if it comes before anyone calls ``get_result``.
    With ``KafkaBroker`` it does nothing more: it is kept so that setups that add it keep working.

    Parameters:
      backend(KafkaResultBackend): The backend the Results middleware uses.
    """

    def __init__(self, backend: KafkaResultBackend) -> None:
        self.backend = backend

    def before_enqueue(self, broker, message, delay) -> None:
        results = result_routing(broker)
        if results is not None and results.backend is self.backend:
            route_reply(broker, message, results)


def result_routing(broker) -> Results | None:
    """Returns the broker's ``Results`` middleware if its backend is a :class:`KafkaResultBackend`."""
    return next(
        (m for m in broker.middleware if isinstance(m, Results) and isinstance(m.backend, KafkaResultBackend)), None
    )


def route_reply(broker, message, results: Results) -> None:
    """Writes the sender's reply partition into a message whose result is stored, and registers
    the sender's interest in that result before the message leaves (a reply can then come at once,
    without reading its partition again from the message's time on)."""
    if REPLY_PARTITION not in message.options and _option(broker, message, "store_results", results.store_results):
        message.options[REPLY_PARTITION] = results.backend.expect(message, message.options.get("result_ttl"))


def store_failure(broker, message, results: Results) -> None:
    """Stores a failed message's exception as its result before the nack makes it done.

    Dramatiq's Results middleware stores it after the nack, when a send Kafka refuses can no longer
    hold the message back, and only logs the refusal: the requester would wait for its timeout.
    Here the message owes the send (see :meth:`KafkaResultBackend.store_failure`), and the Results
    middleware's own store of it after the nack is skipped.
    """
    if not _option(broker, message, "store_results", results.store_results):
        return
    ttl = _option(broker, message, "result_ttl", results.result_ttl)
    try:
        results.backend.store_failure(message, message._exception or Exception("unknown"), ttl)
    except DeliveryFailed:
        pass  # owed: the nack sends it first


def _option(broker, message, name: str, default):
    """A message's option, else its actor's, else ``default``: as Dramatiq's Results reads them."""
    if name in message.options:
        return message.options[name]
    try:
        return broker.get_actor(message.actor_name).options.get(name, default)
    except dramatiq.errors.ActorNotFound:
        return default


def _now() -> int:
    return int(time.time() * 1000)
