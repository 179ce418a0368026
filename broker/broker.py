"""``KafkaBroker``: a Dramatiq broker on Apache Kafka that a team can trust with payments."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import TimeoutError as FutureTimeout
from numbers import Real

import dramatiq
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.middleware import MiddlewareError

from .clientlog import ClientLog
from .consumer import DelayConsumer, KafkaConsumer
from .deadletters import OVERSIZED_KEPT_BYTES, REPLAYED_SUFFIX, DeadLettered, DeadLetterInfo
from .delays import DEFAULT_TIER_DELAYS, DELAY_RETENTION_MS, DelayTiers
from .followups import FOLLOW_UPS
from .messages import BadMessage, check_options
from .producer import (
    DEFAULT_DELIVERY_TIMEOUT_MS,
    MESSAGE_MAX_BYTES,
    METADATA_REFRESH_MS,
    DeliveryFailed,
    DurableProducer,
    Record,
    record_size,
)
from .producer import OWNED_SETTINGS as PRODUCER_OWNED_SETTINGS
from .reading import group_offsets
from .results import result_routing, route_reply, store_failure
from .settings import KafkaSettings, refuse_owned, require_earliest_reset
from .share import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_LOCK_MS,
    SHARE_GROUP_SUFFIX,
    KafkaShareConsumer,
    ShareProgress,
    share_group_configs,
)
from .topics import DEAD_LETTER_RETENTION_MS, MissingTopics, TopicSpec, ensure_topics

logger = logging.getLogger(__name__)

#: How many dead-lettered messages a process remembers for :meth:`KafkaBroker.join`.
MAX_REMEMBERED_DEAD_LETTERS = 1_000

#: librdkafka settings the consumers' guarantees depend on: a ``KAFKA_RDKAFKA_*`` variable may not change them.
CONSUMER_OWNED_SETTINGS = {
    "enable.auto.commit": "offsets are committed only once their messages, and all before them, are done",
    "enable.auto.offset.store": "offsets are committed only once their messages, and all before them, are done",
    "group.id": "each queue is consumed by a group of its own, named after it (KAFKA_PREFIX prefixes it)",
}

#: The message option that routes all of one key's messages to one partition, in order.
PARTITION_KEY = "partition_key"

#: Records larger than this (bytes) are dead-lettered unread, as "oversized", by default.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576


class KafkaBroker(dramatiq.Broker):
    """A Dramatiq broker backed by Apache Kafka.

    Every queue is a topic, consumed by a consumer group of its own.  Messages are delivered at
    least once: a message's offset is committed only once it and every message before it in its
    partition has finished, so a crash redelivers and never loses.  Delayed messages (and so the
    Retries middleware's backoff) live in fixed-delay tier topics, not in worker memory
    (:mod:`broker.delays`).  Rejected messages go to the ``<queue>.XQ`` topic with their reason.

    Limitations, compared with the RabbitMQ and Redis brokers: a queue's parallelism across worker
    processes is bounded by its partition count; a redelivered message may have run before, so
    actors with effects must be idempotent; message priorities are not supported across messages
    of one partition.

    Parameters:
      middleware(list[Middleware]): The middleware to add to this broker.
      settings(KafkaSettings): Cluster settings; by default read from the environment, with any
        of ``KafkaSettings``'s fields given as keyword arguments taking precedence.
      partitions(int): Partitions of each queue and delay topic that the broker creates.
      replication_factor(int): Replication factor of created topics; -1 is the cluster default.
      retention_ms(int|None): Retention of queue topics; ``None`` is the cluster default.
      dead_letter_retention_ms(int): Retention of dead-letter topics (7 days).
      delay_tiers(tuple[int]): The fixed delays of the delay tiers, in ms (see broker.delays).
      group_protocol(str): ``"classic"`` (cooperative-sticky) or ``"consumer"`` (KIP-848).
      delivery_timeout_ms(int): The bound on waiting for Kafka to acknowledge an enqueue.
      commit_interval_ms(int): How often finished offsets are committed.
      consumer_config(dict): Extra librdkafka settings for consumers only.
      max_message_bytes(int): Consumed records larger than this are dead-lettered as oversized
        without being decoded; their dead letter keeps only their first bytes.
      share_queues(Iterable[str]): Queues read by a share group instead of a consumer group, so
        that more worker processes than partitions share their work (a preview: see
        :mod:`broker.share`).
      share_lock_ms(int): How long a share group locks a record it handed out.
      share_delivery_limit(int): The deliveries of a share queue's record, the last of which
        dead-letters it ("delivery count exceeded").
    """

    def __init__(
        self,
        *,
        middleware=None,
        settings: KafkaSettings | None = None,
        partitions: int = 4,
        replication_factor: int = -1,
        retention_ms: int | None = None,
        dead_letter_retention_ms: int = DEAD_LETTER_RETENTION_MS,
        delay_tiers=DEFAULT_TIER_DELAYS,
        group_protocol: str = "classic",
        delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
        commit_interval_ms: int = 100,
        consumer_config: dict | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        share_queues=(),
        share_lock_ms: int = DEFAULT_LOCK_MS,
        share_delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        **settings_overrides,
    ) -> None:
        if group_protocol not in ("classic", "consumer"):
            raise ValueError(f"group_protocol must be 'classic' or 'consumer', not {group_protocol!r}")
        self.settings = settings or KafkaSettings.from_env(**settings_overrides)
        refuse_owned(self.settings, {**PRODUCER_OWNED_SETTINGS, **CONSUMER_OWNED_SETTINGS})
        require_earliest_reset(
            self.settings,
            "a queue's new consumer group must read it from its start, or the tasks sent before its first "
            "worker started are never run",
        )
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.retention_ms = retention_ms
        self.dead_letter_retention_ms = dead_letter_retention_ms
        self.tiers = DelayTiers(delay_tiers)
        self.group_protocol = group_protocol
        self.delivery_timeout_ms = delivery_timeout_ms
        self.commit_interval_ms = commit_interval_ms
        self.extra_consumer_config = dict(consumer_config or {})
        self.max_message_bytes = max_message_bytes
        self.share_queues = frozenset(share_queues)
        self.share_lock_ms = share_lock_ms
        self.share_delivery_limit = share_delivery_limit
        #: What this process's share consumers acknowledged, for join().
        self.share_progress = ShareProgress()
        self._share_groups_set: set[str] = set()
        #: The largest record this broker writes, key and headers included: what its consumers hand
        #: out, and Kafka takes, with room for a dead letter's headers.
        self.max_record_bytes = min(max_message_bytes, MESSAGE_MAX_BYTES - RECORD_OVERHEAD_BYTES)
        #: The largest message ``send`` takes: room for a retry's traceback besides.
        self._max_sent_bytes = max(self.max_record_bytes - SENT_ROOM_BYTES, self.max_record_bytes * 3 // 4)
        self._dead_letters: dict[str, deque] = defaultdict(lambda: deque(maxlen=MAX_REMEMBERED_DEAD_LETTERS))
        self._lock = threading.Lock()
        self._clients_pid: int | None = None
        self._producer: DurableProducer | None = None
        self._admin: AdminClient | None = None
        #: group -> (lock, consumer) that reads the group's committed offsets (see committed()).
        self._offset_readers: dict[str, tuple] = {}
        self._ensured: set[str] = set()
        #: Declared queue names (a dict, as Dramatiq's get_declared_queues reads its keys).  Set
        #: before Dramatiq's __init__, whose add_middleware reads it.
        self.queues: dict[str, None] = {}
        #: Queues whose consumers hand nothing out (paused by an operator, see broker.ops.control).
        self.paused_queues: frozenset[str] = frozenset()
        super().__init__(middleware=middleware)

    def __repr__(self) -> str:
        return f"KafkaBroker(settings={self.settings!r})"

    # Hooks ------------------------------------------------------------------------------------

    def emit_before(self, signal: str, *args, **kwargs) -> None:
        """Dramatiq's, with a nacked message's span of follow-ups open (see :mod:`broker.followups`),
        in which a failed message's result is stored, if results are kept in Kafka.

        A ``MiddlewareError`` raised before an ack or a nack is logged, and the ack or nack goes on:
        Dramatiq's worker would give the message up unacked, which on Kafka holds back every commit
        of its partition, and a prefetch slot, until the worker restarts.
        """
        with _follow_ups_of(args, signal in _FOLLOWED_BEFORE):
            try:
                super().emit_before(signal, *args, **kwargs)
            except MiddlewareError:
                if signal not in _FINISHING:
                    raise
                logger.critical(
                    "A middleware raised before the %s of message %s.", signal, args[0].message_id, exc_info=True
                )
            if signal == "nack" and (results := result_routing(self)) is not None:
                store_failure(self, args[0], results)

    def emit_after(self, signal: str, *args, **kwargs) -> None:
        """Dramatiq's, with a processed message's span of follow-ups open (see :mod:`broker.followups`).

        Dramatiq only logs what a middleware raises after an actor ran, and the worker then acks
        the message: a retry that could not be computed, a result that could not be encoded, would
        be lost.  Here such a message fails instead, so it is dead-lettered with the reason.  A
        send Kafka refused is no such failure: the message owes it, and its ack makes it.
        """
        if signal not in _FOLLOWED_AFTER:
            super().emit_after(signal, *args, **kwargs)
            return
        message, hook = args[0], "after_" + signal
        failures = []
        with FOLLOW_UPS.of(message):
            for middleware in reversed(self.middleware):
                try:
                    getattr(middleware, hook)(self, *args, **kwargs)
                except Exception as e:
                    failures.append((f"{type(middleware).__name__}.{hook}", e))
        for where, error in failures:
            self._after_actor_failed(message, where, error, signal)

    def _after_actor_failed(self, message, where: str, error: Exception, signal: str) -> None:
        if isinstance(error, DeliveryFailed) and error.owed:
            logger.warning(
                "%s could not send what message %s leads to; its ack sends it: %s", where, message.message_id, error
            )
        elif signal == "nack" or not isinstance(message, MessageProxy):
            logger.critical("Unexpected failure in %s for message %s.", where, message.message_id, exc_info=error)
        elif message.failed or FOLLOW_UPS.made(message, _RETRY):
            logger.error(
                "%s failed for message %s, which is %s anyway: %s: %s",
                where,
                message.message_id,
                "dead-lettered" if message.failed else "retried",
                type(error).__name__,
                error,
            )
        else:
            actor_error = getattr(message, "_exception", None)
            reason = f"{where} failed: {type(error).__name__}: {error}"
            if actor_error is not None:
                reason += f" (the actor raised {type(actor_error).__name__}: {actor_error})"
            logger.error("Message %s fails, to be dead-lettered: %s", message.message_id, reason)
            message.fail()
            message.stuff_exception(AfterActorFailed(reason))

    # Clients, created lazily in each process (librdkafka clients do not survive a fork) --------

    def _check_pid(self) -> None:
        if self._clients_pid != os.getpid():
            self._clients_pid = os.getpid()
            self._producer = None
            self._admin = None
            self._offset_readers = {}
            self._ensured = set()

    @property
    def producer(self) -> DurableProducer:
        """This process's producer."""
        with self._lock:
            self._check_pid()
            if self._producer is None:
                self._producer = DurableProducer(
                    self.settings.client_config(), delivery_timeout_ms=self.delivery_timeout_ms
                )
            return self._producer

    @property
    def admin(self) -> AdminClient:
        """This process's admin client."""
        with self._lock:
            self._check_pid()
            if self._admin is None:
                self._admin = AdminClient({**self.settings.client_config(), **ClientLog("admin client").config()})
            return self._admin

    def committed(
        self, group: str, partitions: list[TopicPartition], *, timeout: float = 30
    ) -> dict[tuple[str, int], int]:
        """The offsets a consumer group (its full name) committed in the given partitions (-1: none).

        Asked through a consumer of that group that never joins it, one per group in this process.

        Raises:
          KafkaException: If the cluster cannot answer.
        """
        with self._lock:
            self._check_pid()
            reader = self._offset_readers.get(group)
            if reader is None:
                config = {**self.settings.client_config(), **ClientLog(f"offset reader of {group}").config()}
                reader = self._offset_readers[group] = (
                    threading.Lock(),
                    Consumer({**config, "group.id": group, "enable.auto.commit": False}),
                )
        lock, consumer = reader
        with lock:  # a consumer is not for two threads at once
            found = consumer.committed(partitions, timeout=timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in found}

    def consumer_config(self, group: str, *, defaults: dict | None = None, protocol: str | None = None) -> dict:
        """Returns the librdkafka configuration of a consumer in the given (unprefixed) group.

        The user's settings (``KAFKA_RDKAFKA_*``, ``consumer_config``) win over these defaults, and
        over the ``defaults`` of a kind of consumer, which win over the broker's; those the
        guarantees depend on are refused at construction (``CONSUMER_OWNED_SETTINGS``).

        Parameters:
          protocol(str|None): The group protocol, if not the broker's ``group_protocol``.
        """
        generic = {
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "max.poll.interval.ms": 300_000,
            # Partitions added to a queue's topic are read within seconds, not librdkafka's 5 minutes.
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        }
        if (protocol or self.group_protocol) == "consumer":
            generic["group.protocol"] = "consumer"
        else:
            generic.update(
                {
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                }
            )
        owned = {"group.id": self.settings.group(group), "enable.auto.commit": False}
        return {**generic, **(defaults or {}), **self.settings.client_config(), **self.extra_consumer_config, **owned}

    # Topics -----------------------------------------------------------------------------------

    def topic_specs(self, queue_name: str) -> list[TopicSpec]:
        """Returns the topics behind a queue: the queue, its delay tiers, its dead letters, and the
        compacted topic that marks the dead letters replayed (see :mod:`broker.dlq`)."""
        main_config = {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}
        topic = self.settings.topic
        return [
            TopicSpec(topic(queue_name), self.partitions, self.replication_factor, main_config),
            *(
                TopicSpec(
                    topic(name), self.partitions, self.replication_factor, {"retention.ms": str(DELAY_RETENTION_MS)}
                )
                for name in self.tiers.topics(dq_name(queue_name))
            ),
            TopicSpec(
                topic(xq_name(queue_name)),
                1,
                self.replication_factor,
                {"retention.ms": str(self.dead_letter_retention_ms)},
            ),
            TopicSpec(
                topic(xq_name(queue_name) + REPLAYED_SUFFIX),
                1,
                self.replication_factor,
                {"cleanup.policy": "compact,delete", "retention.ms": str(self.dead_letter_retention_ms)},
            ),
        ]

    def consumer_groups(self, queue_names=None) -> list[str]:
        """The consumer groups of the declared queues (or of the given ones), unprefixed: a queue's
        own, and its delay queue's."""
        return [
            group
            for name in sorted(self.queues if queue_names is None else queue_names)
            for group in (name, dq_name(name))
        ]

    def ensure_topics(self, queue_names=None) -> list[str]:
        """Creates the topics of the declared queues (or of the given ones) that are missing.

        Returns:
          The names of the topics created.

        Raises:
          MissingTopics: If the cluster refuses to create topics and some do not exist.
        """
        names = sorted(self.queues if queue_names is None else queue_names)
        created = ensure_topics(self.admin, [spec for name in names for spec in self.topic_specs(name)])
        with self._lock:
            self._ensured.update(names)
        return created

    def _ensure_queue(self, queue_name: str) -> None:
        """Ensures a queue's topics once per process, as fast as an enqueue must fail."""
        self._check_pid()
        if queue_name in self._ensured:
            return
        specs = self.topic_specs(queue_name)
        try:
            ensure_topics(self.admin, specs, timeout=self.delivery_timeout_ms / 1000)
        except (KafkaException, FutureTimeout) as e:
            raise DeliveryFailed(f"could not reach Kafka to ensure the topics of {queue_name!r}: {e!r}") from None
        except MissingTopics as e:
            raise DeliveryFailed(str(e)) from None
        with self._lock:
            self._ensured.add(queue_name)

    # Dramatiq's Broker contract ---------------------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declares a queue.  Touches no network: its topics are ensured on first use.

        Parameters:
          queue_name(str): The name of the new queue.
        """
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = None
        self.emit_after("declare_queue", queue_name)
        delayed_name = dq_name(queue_name)
        self.delay_queues.add(delayed_name)
        self.emit_after("declare_delay_queue", delayed_name)

    def declare_actor(self, actor: dramatiq.Actor) -> None:
        """Declares an actor, once its options are ones Dramatiq's middleware can act on.

        Raises:
          BadMessage: If an option such as ``min_backoff`` is no finite number of at least 0.
        """
        check_options(actor.options)
        super().declare_actor(actor)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        """Returns a consumer for a queue or delay queue.

        Raises:
          QueueNotFound: If the queue was not declared.
        """
        base = q_name(queue_name)
        if base not in self.queues:
            raise QueueNotFound(queue_name)
        self._ensure_queue(base)
        if queue_name in self.delay_queues:
            topics = [self.settings.topic(name) for name in self.tiers.topics(queue_name)]
            return DelayConsumer(self, queue_name, self.tiers, topics, queue_name, prefetch, timeout)
        if queue_name in self.share_queues:
            group = self.settings.group(queue_name + SHARE_GROUP_SUFFIX)
            self._set_share_group(group)
            return KafkaShareConsumer(self, queue_name, self.settings.topic(queue_name), group, prefetch, timeout)
        return KafkaConsumer(self, queue_name, [self.settings.topic(queue_name)], queue_name, prefetch, timeout)

    def _set_share_group(self, group: str) -> None:
        """Sets a share queue's group configs, once per process: it reads from the queue's start,
        with this broker's record lock and delivery limit.  A cluster that refuses (no rights to
        alter group configs) keeps its defaults, which is logged."""
        if group in self._share_groups_set:
            return
        entries = [
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in share_group_configs(self.share_lock_ms, self.share_delivery_limit).items()
        ]
        try:
            for future in self.admin.incremental_alter_configs(
                [ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)]
            ).values():
                future.result(self.delivery_timeout_ms / 1000)
        except (KafkaException, FutureTimeout) as e:
            logger.warning("Could not set the configs of share group %s (it keeps the cluster's): %s", group, e)
            return
        self._share_groups_set.add(group)

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        """Enqueues a message and returns once Kafka has acknowledged it.

        Parameters:
          message(Message): The message to enqueue.
          delay(int): The minimum time, in milliseconds, to delay the message by.

        Raises:
          QueueNotFound: If the message's queue was not declared.
          BadMessage: If an option or the delay is one Dramatiq's middleware cannot act on, or the
            message is too large to be written again as its dead letter.
          DeliveryFailed: If Kafka did not acknowledge the message within ``delivery_timeout_ms``.
        """
        # Sent by middleware after an actor ran (a retry, a pipeline's next step), it is owed by
        # the message processed when Kafka refuses it (see broker.followups).
        retry = _RETRY if message is FOLLOW_UPS.current else None
        return FOLLOW_UPS.send(functools.partial(self.enqueue_many, [message], delay=delay), once=retry)[0]

    def enqueue_many(self, messages, *, delay: int | None = None) -> list[dramatiq.Message]:
        """Enqueues messages with one wait for Kafka's acknowledgement of all of them.

        Raises:
          QueueNotFound: If a message's queue was not declared.
          BadMessage: If a message cannot be sent (see :meth:`enqueue`); then none is.
          DeliveryFailed: If Kafka did not acknowledge every message.
        """
        routed = [self._route(message, delay) for message in messages]
        for message in routed:
            self.emit_before("enqueue", message, delay)
        # Encoded after before_enqueue, so middleware may still add options.
        records = [self.record_of(message, limit=self.send_limit(message)) for message in routed]
        self.producer.send_many(records)
        for message in routed:
            self.emit_after("enqueue", message, delay)
        return routed

    def _route(self, message: dramatiq.Message, delay: int | None) -> dramatiq.Message:
        """Checks a message and its queue, and moves a delayed one to the delay queue, with its eta:
        a ``delay``, or an ``eta`` option in the future (so no future eta ever waits in a worker's
        memory, holding back the commits behind it).
        """
        base = q_name(message.queue_name)
        if base not in self.queues:
            raise QueueNotFound(message.queue_name)
        check_options(message.options)
        if delay is not None and not (_is_number(delay) and math.isfinite(delay) and delay >= 0):
            raise BadMessage(f"a delay must be a finite number of milliseconds of at least 0, not {delay!r}")
        self._ensure_queue(base)
        eta = message.options.get("eta")
        if delay is not None:
            message = message.copy(queue_name=dq_name(base), options={"eta": current_millis() + int(delay)})
        elif _is_number(eta) and eta > current_millis():
            message = message.copy(queue_name=dq_name(base))
        if (results := result_routing(self)) is not None:
            route_reply(self, message, results)
        return message

    def send_limit(self, message) -> int:
        """The largest a message may be sent: a new one leaves room for its retry's traceback, and
        one sent again (a retry, a delayed message moving to its queue) may use that room."""
        again = isinstance(message, MessageProxy) or "retries" in message.options
        return self.max_record_bytes if again else self._max_sent_bytes

    def record_of(self, message: dramatiq.Message, *, limit: int | None = None) -> Record:
        """Returns the Kafka record of a message: its topic (a delay tier for delayed ones) and key.

        Parameters:
          limit(int): The largest the record may be (bytes), its traceback option cut first.

        Raises:
          BadMessage: If it is larger than ``limit`` still.
        """
        now = current_millis()
        if message.queue_name in self.queues:
            topic = self.settings.topic(message.queue_name)
        else:
            remaining = max(0, int(message.options.get("eta", now)) - now)
            topic = self.settings.topic(self.tiers.for_delay(remaining).topic(message.queue_name))
        key = message.options.get(PARTITION_KEY)
        key = None if key is None else str(key).encode()
        value = _encode(message, self.max_record_bytes if limit is None else limit)
        if limit is not None and len(value) > limit:
            raise BadMessage(
                f"message {message.message_id} is {len(value)} bytes; at most {limit} can be sent "
                f"and still fit, with the reason, in its dead-letter topic"
            )
        return Record(topic, value, key=key, timestamp=now)

    # Dead letters -----------------------------------------------------------------------------

    def dead_letter(self, message, exception: BaseException | None) -> None:
        """Sends a rejected message to its queue's dead-letter topic, with why and from where.

        Raises:
          DeliveryFailed: If Kafka did not acknowledge the dead letter.
        """
        topic, partition, offset = message.kafka_position
        info = DeadLetterInfo.for_exception(
            exception, retries=message.options.get("retries", 0), topic=topic, partition=partition, offset=offset
        )
        queue_name = q_name(message.queue_name)
        value = _encode(message, self.max_record_bytes)
        if len(value) > self.max_record_bytes:
            # A message too large to send again (another producer wrote it): its start, as for an oversized record.
            info = dataclasses.replace(info, original_size=len(value))
            value = value[:OVERSIZED_KEPT_BYTES]
        self.producer.send(Record(self.settings.topic(xq_name(queue_name)), value, headers=info.headers()))
        self._remember_dead_letter(queue_name, message, exception)

    def dead_letter_record(self, queue_name: str, record, reason: str) -> None:
        """Sends a record that is no valid message to the queue's dead-letter topic, as it is; of a
        record too large to write again with the reason (over :attr:`max_record_bytes`), only the
        first ``OVERSIZED_KEPT_BYTES`` of its value and key."""
        value, key = record.value() or b"", record.key()
        size = record_size(value, key, None)
        cut = size > max(self.max_record_bytes, OVERSIZED_KEPT_BYTES)
        info = DeadLetterInfo(
            reason=reason,
            topic=record.topic(),
            partition=record.partition(),
            offset=record.offset(),
            dead_lettered_at=current_millis(),
            original_size=len(value) if cut else None,
        )
        queue_name = q_name(queue_name)
        if cut:
            value, key = value[:OVERSIZED_KEPT_BYTES], key and key[:OVERSIZED_KEPT_BYTES]
        self.producer.send(Record(self.settings.topic(xq_name(queue_name)), value, key=key, headers=info.headers()))
        logger.error("Dead-lettered a record of %s: %s", record.topic(), reason)
        position = f"{record.topic()}/{record.partition()}/{record.offset()}"
        placeholder = dramatiq.Message(
            queue_name=queue_name,
            actor_name="",
            args=(),
            kwargs={},
            options={"dead_letter_reason": reason},
            message_id=position,
        )
        self._remember_dead_letter(queue_name, placeholder, DeadLettered(f"{position}: {reason}"))

    def _remember_dead_letter(self, queue_name: str, message, exception: BaseException | None) -> None:
        """Keeps a dead letter for :attr:`dead_letters` and :meth:`join`, its exception without
        the frames of the failed run (which would pin its arguments and locals in memory)."""
        self._dead_letters[queue_name].append((message, _without_frames(exception)))

    @property
    def dead_letters(self) -> list[dramatiq.Message]:
        """The messages this process dead-lettered (the latest ones), as StubBroker lists them.

        A record that was no message is listed as a message with no actor, whose id is the
        record's ``topic/partition/offset`` and whose ``dead_letter_reason`` option says why.
        """
        return [message for letters in self._dead_letters.values() for message, _ in letters]

    # Pausing -----------------------------------------------------------------------------------

    def is_paused(self, queue_name: str) -> bool:
        """Whether a queue's consumers in this process hand nothing out."""
        return queue_name in self.paused_queues

    def set_paused(self, queue_names) -> None:
        """Sets the queues this process's consumers pause: they stop fetching and hand nothing
        out, while the messages they handed out finish; the others go on (see broker.ops.control)."""
        paused = frozenset(queue_names)
        if paused != self.paused_queues:
            for name in sorted(paused - self.paused_queues):
                logger.warning("Queue %s is paused: its consumers in this process hand nothing out.", name)
            for name in sorted(self.paused_queues - paused):
                logger.warning("Queue %s is resumed.", name)
            self.paused_queues = paused

    # Test helpers, with the StubBroker's meaning -----------------------------------------------

    def _partitions(self, topics: list[str]) -> list[TopicPartition]:
        metadata = self.admin.list_topics(timeout=30).topics
        return [TopicPartition(topic, p) for topic in topics if topic in metadata for p in metadata[topic].partitions]

    def _is_drained(self, group: str | None, topics: list[str]) -> bool:
        """Tells whether a group has committed everything up to the end of the topics; with no
        group (a share queue), whether this process's share consumers acknowledged it all."""
        if group is None:
            return all(
                self.share_progress.covers(p.topic, p.partition, p.start, p.end)
                for p in group_offsets(self, None, topics)
            )
        return all(p.behind == 0 for p in group_offsets(self, self.settings.group(group), topics))

    def _all_drained(self, groups) -> bool:
        try:
            return all(self._is_drained(group, topics) for group, topics in groups)
        except KafkaException as e:
            # New topics may have no leader yet; a lasting error ends in the join's timeout.
            logger.debug("Could not read offsets yet: %s", e)
            return False

    def join(self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None) -> None:
        """Waits until every message of a queue, delayed ones included, has been processed.

        Meant for tests, like ``StubBroker.join``: it watches the committed offsets of the queue's
        consumer groups reach the end of its topics.

        Parameters:
          queue_name(str): The queue to wait on.
          timeout(int): The maximum time to wait, in milliseconds.
          fail_fast(bool): Re-raise the error of a message this process dead-lettered from the
            queue (``True`` by default, as ``StubBroker.fail_fast_default``).

        Raises:
          QueueJoinTimeout: When the timeout elapses.
          QueueNotFound: If the queue was not declared.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        deadline = timeout and time.monotonic() + timeout / 1000
        main = (queue_name, [self.settings.topic(queue_name)])
        delayed = (dq_name(queue_name), [self.settings.topic(t) for t in self.tiers.topics(dq_name(queue_name))])
        if queue_name in self.share_queues:
            main = (None, main[1])  # a share group: its progress is this process's consumers' acks
        while not self._all_drained([main, delayed, main]):
            if deadline and time.monotonic() > deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.02)
        if fail_fast if fail_fast is not None else True:
            for _, exception in self._dead_letters[queue_name]:
                raise (_without_frames(exception) or Exception("Message failed with unknown error")) from None

    def flush(self, queue_name: str) -> None:
        """Drops every pending message of a queue and its delay queue.  Topics that do not exist
        are left so: flushing creates nothing.

        Parameters:
          queue_name(str): The queue to flush.
        """
        base = q_name(queue_name)
        topics = [self.settings.topic(base), *(self.settings.topic(t) for t in self.tiers.topics(dq_name(base)))]
        partitions = [TopicPartition(tp.topic, tp.partition, -1) for tp in self._partitions(topics)]
        deadline = time.monotonic() + 30
        while partitions:
            try:
                for future in self.admin.delete_records(partitions).values():
                    future.result(30)
                break
            except KafkaException as e:
                # Topics created a moment ago may have no leader yet.
                if time.monotonic() > deadline:
                    raise
                logger.debug("Retrying a flush of %s: %s", base, e)
                time.sleep(0.1)
        self._dead_letters.pop(base, None)

    def flush_all(self) -> None:
        """Drops every pending message of every declared queue."""
        for queue_name in self.queues:
            self.flush(queue_name)

    def close(self) -> None:
        """Delivers what the producer still holds and lets go of this process's clients.  Can be
        called more than once; a later use creates new clients.
        """
        with self._lock:
            producer, self._producer = self._producer, None
            self._admin = None
            readers, self._offset_readers = self._offset_readers, {}
        if self._clients_pid == os.getpid():
            for lock, reader in readers.values():
                with lock:
                    reader.close()
            if producer is not None:
                producer.close()


class AfterActorFailed(Exception):
    """What a message that failed after its actor ran is dead-lettered with: which middleware
    failed, how, and what the actor had raised."""


#: The hooks that finish a message: it must be acked or nacked whatever a middleware raises before.
_FINISHING = frozenset({"ack", "nack"})

#: The hooks around which a message's follow-ups are owed by it (see :mod:`broker.followups`).
_FOLLOWED_BEFORE = frozenset({"nack"})
_FOLLOWED_AFTER = frozenset({"process_message", "skip_message", "nack"})


#: The follow-up name of a message sent again while it is followed up: its retry.
_RETRY = "retry"


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _without_frames(exception: BaseException | None) -> BaseException | None:
    """A copy of an exception without its traceback, cause or context (none of their frames)."""
    if exception is None:
        return None
    try:
        kept = copy.copy(exception)
    except Exception:
        kept = Exception(f"{type(exception).__name__}: {exception}")
    kept.__traceback__ = kept.__cause__ = kept.__context__ = None
    return kept


def _follow_ups_of(args: tuple, followed: bool):
    """The span of follow-ups of the message a hook is about (its first argument), if ``followed``."""
    return FOLLOW_UPS.of(args[0]) if followed else contextlib.nullcontext()


#: The most of Dramatiq's ``traceback`` option a record keeps: its end, where the exception is.
#: Retries stores the formatted exception there, and an exception's message can be any size; uncut,
#: a message could outgrow what Kafka takes, and its retry or dead letter be refused for good.
MAX_TRACEBACK_CHARS = 16 * 1024


#: Bytes a record needs in Kafka besides its value: record and batch headers, and a dead letter's
#: headers (each text of up to ``deadletters.MAX_TEXT_BYTES``), with room to spare.
RECORD_OVERHEAD_BYTES = 24 * 1024

#: Room a sent message leaves below the largest record, so its retry can carry some traceback.
SENT_ROOM_BYTES = 4 * 1024


def _encode(message: dramatiq.Message, max_bytes: int) -> bytes:
    """Encodes a message, its ``traceback`` option cut to its last ``MAX_TRACEBACK_CHARS``, and
    shorter still if the message would otherwise outgrow ``max_bytes``: so that a message a
    consumer handed out can always be written again, as a retry or a dead letter, though what a
    retry adds made it larger.
    """
    traceback = message.options.get("traceback")
    if not isinstance(traceback, str):
        return message.encode()
    if len(traceback) > MAX_TRACEBACK_CHARS:
        message = message.copy(options={"traceback": "\u2026" + traceback[-MAX_TRACEBACK_CHARS:]})
    encoded = message.encode()
    if len(encoded) <= max_bytes:
        return encoded
    bare = message.copy(options={"traceback": "\u2026"}).encode()
    # A character takes at most 12 bytes as JSON (an escaped surrogate pair): keep what surely fits.
    room = max(0, (max_bytes - len(bare)) // 12)
    kept = message.options["traceback"][-room:] if room else ""
    return message.copy(options={"traceback": "\u2026" + kept.lstrip("\u2026")}).encode()
