"""``kafka-tasks clock``: sends each schedule's messages when they are due, from one leader.

Any number of clock processes may run; exactly one sends.  They all join one consumer group on
one topic of a single partition (:data:`CLOCK_TOPIC`, compacted): the member that owns the
partition is the leader, and when it dies the group gives the partition to another within its
session timeout.  Nothing else is needed: no lock in Redis or a database.

The same partition keeps the clock's state: per schedule (the record key), its last tick.  A new
leader reads the partition from its start, so it resumes where the last one stopped, and neither
skips nor repeats a tick.  Each tick is three writes, each acknowledged before the next:

1. ``sending`` the tick, to the clock topic;
2. the tick's message, to its actor's queue, with an id derived from the schedule and the tick
   (:func:`broker.schedules.tick_id`);
3. ``sent``, to the clock topic.

A leader that dies between 1 and 3 leaves ``sending`` as its schedule's last record.  Its
successor then reads the actor's queue from that record's time on for the tick's message id: if
the message is there it records ``sent``; if not, it sends it.  So a failover repeats no tick, and
this needs no Kafka transactions (which Heroku's multi-tenant plans do not grant).  A leader that
was paused (a stopped process, a long GC) past its session timeout may still believe it leads for
up to a heartbeat; it fires nothing after such a gap until the group has had time to tell it, and
a tick sent twice anyway would carry the same message id.

Which ticks are due, and what a schedule does about ticks missed while no clock ran, is decided by
:mod:`broker.schedules` (pure logic).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dramatiq
from confluent_kafka import Consumer, TopicPartition

from . import reading
from .clientlog import ClientLog
from .producer import Record
from .schedules import DEFAULT_GRACE, Schedule, due_ticks, next_tick, resume_point, tick_id
from .topics import TopicSpec, ensure_topics

logger = logging.getLogger(__name__)

#: The clock's topic (``KAFKA_PREFIX`` in front): leadership, and the last tick of each schedule.
CLOCK_TOPIC = "kafka-tasks.clock"

#: The clock processes' consumer group (``KAFKA_PREFIX`` in front).
CLOCK_GROUP = "kafka-tasks.clock"

#: How long a dead leader keeps the partition before another clock takes it over (ms): the group's
#: session timeout, as low as Kafka allows by default (``group.min.session.timeout.ms``).
SESSION_TIMEOUT_MS = 6_000

#: How often a clock tells the group it is alive (ms).
HEARTBEAT_INTERVAL_MS = 1_000

#: The longest a clock sleeps between looks at the group and its schedules (s).
MAX_WAIT = 0.2

#: The options a tick's message carries: its schedule's name, and the tick (ISO 8601, UTC).
SCHEDULE_OPTION, TICK_OPTION = "schedule", "tick"


@dataclass(frozen=True)
class TickRecord:
    """A record of the clock topic: where a schedule stands.

    Parameters:
      schedule(str): The schedule's name (the record's key).
      tick(datetime): Its last tick fired, or being fired; for a schedule seen for the first time,
        the moment it was seen.
      phase(str): ``"sending"`` (its message may or may not be in Kafka) or ``"sent"``.
      message_id(str|None): The tick's message id (``None`` for a schedule first seen).
      written_at(int): When the record was written (epoch ms).
    """

    schedule: str
    tick: datetime
    phase: str
    message_id: str | None
    written_at: int

    def encode(self) -> bytes:
        return json.dumps(
            {"tick": self.tick.isoformat(), "phase": self.phase, "message_id": self.message_id}, sort_keys=True
        ).encode()

    @classmethod
    def decode(cls, key: bytes, value: bytes, written_at: int) -> TickRecord:
        """Raises ``ValueError`` (or ``KeyError``) for a record that is not one."""
        fields = json.loads(value)
        tick = datetime.fromisoformat(fields["tick"])
        if tick.utcoffset() is None or fields["phase"] not in ("sending", "sent"):
            raise ValueError(f"not a clock record: {value[:200]!r}")
        return cls(key.decode(), tick.astimezone(UTC), fields["phase"], fields.get("message_id"), written_at)


def tick_message(broker: dramatiq.Broker, schedule: Schedule, tick: datetime) -> dramatiq.Message:
    """The message a schedule's tick sends: its actor and arguments, with the tick's id."""
    queue_name = schedule.queue_name or broker.get_actor(schedule.actor_name).queue_name
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=schedule.actor_name,
        args=schedule.args,
        kwargs=schedule.kwargs,
        options={SCHEDULE_OPTION: schedule.name, TICK_OPTION: tick.astimezone(UTC).isoformat()},
        message_id=tick_id(schedule, tick),
    )


class Clock:
    """The clock of an application: its schedules, sent through its broker.

    Parameters:
      broker(KafkaBroker): Where the ticks' messages are sent, and whose cluster keeps the clock.
      schedules(Iterable[Schedule]): What to send when.
      session_timeout_ms(int): How long a dead leader keeps leadership (see :data:`SESSION_TIMEOUT_MS`).
      grace(timedelta): How late a tick of a ``missed="none"`` schedule may be sent (see
        :func:`broker.schedules.due_ticks`).
    """

    def __init__(
        self,
        broker,
        schedules: Iterable[Schedule],
        *,
        session_timeout_ms: int = SESSION_TIMEOUT_MS,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.broker = broker
        self.schedules = list(schedules)
        self.session_timeout_ms = session_timeout_ms
        self.grace = grace
        self.topic = broker.settings.topic(CLOCK_TOPIC)
        #: Its consumer group, unprefixed.
        self.group = CLOCK_GROUP
        #: The last record of each schedule, as the leader knows it.
        self.state: dict[str, TickRecord] = {}
        self._lock = threading.Lock()
        self._assigned = False
        #: Set once the leader has read the clock topic to its end: it may fire.
        self._loaded = False
        self._load_end: int | None = None
        self._quiet_until = 0.0

    # Topics ------------------------------------------------------------------------------------

    def topic_spec(self) -> TopicSpec:
        """The clock topic: one partition (one leader), compacted (one record per schedule)."""
        return TopicSpec(self.topic, 1, self.broker.replication_factor, {"cleanup.policy": "compact"})

    def ensure_topic(self) -> list[str]:
        """Creates the clock topic if it is missing.

        Raises:
          MissingTopics: If it is missing and the cluster does not let this client create it.
        """
        return ensure_topics(self.broker.admin, [self.topic_spec()])

    # Reading the state, without leading (``kafka-tasks clock --list``) ---------------------------

    def read_state(self, timeout: float = reading.READ_TIMEOUT) -> dict[str, TickRecord]:
        """Reads the clock topic to its end: the last record of each schedule."""
        records, _ = reading.read_to_end(self.broker, self.topic, timeout=timeout, reader=f"{CLOCK_GROUP}.reader")
        state: dict[str, TickRecord] = {}
        for record in records:
            self._apply(state, record)
        return state

    def listing(self, now: datetime, state: dict[str, TickRecord]) -> list[tuple[str, str, str, str]]:
        """Each schedule's name, timing, next tick and last tick (``-`` if none), as text."""
        rows = []
        for schedule in self.schedules:
            last = state.get(schedule.name)
            fired = "-" if last is None or last.message_id is None else f"{last.tick.isoformat()} ({last.phase})"
            rows.append((schedule.name, schedule.timing, next_tick(schedule, now).isoformat(), fired))
        return rows

    @staticmethod
    def _apply(state: dict[str, TickRecord], record) -> None:
        if record.error() is not None or record.key() is None:
            return
        if record.value() is None:
            state.pop(record.key().decode(errors="replace"), None)  # a tombstone: forgotten
            return
        try:
            state_record = TickRecord.decode(record.key(), record.value(), record.timestamp()[1])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            logger.warning("Ignoring a record of %s that is no clock record: %s", record.topic(), e)
            return
        state[state_record.schedule] = state_record

    # Leading -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Joins the clock group and, while this process leads, sends what is due, until ``stop``.

        Raises:
          KafkaException: If the clock's consumer fails fatally.
        """
        self.ensure_topic()
        log = ClientLog("clock")
        consumer = Consumer(
            {
                # The classic protocol, whatever the queues use: its session timeout is the client's,
                # so a dead leader is replaced within seconds (KIP-848's is the broker's, 45 s).
                **self.broker.consumer_config(
                    CLOCK_GROUP,
                    defaults={
                        "session.timeout.ms": self.session_timeout_ms,
                        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                        "fetch.wait.max.ms": 50,
                    },
                    protocol="classic",
                ),
                **log.config(),
            }
        )
        consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        logger.info("Clock started with %d schedule(s); waiting to lead or standing by.", len(self.schedules))
        last_loop = time.monotonic()
        try:
            while not stop.is_set():
                records = consumer.consume(500, timeout=self._wait())
                now = time.monotonic()
                if now - last_loop > self.session_timeout_ms / 3000:
                    # This process was paused: the group may have given leadership away meanwhile,
                    # and says so within a heartbeat or two.  Fire nothing until it had the time.
                    self._quiet_until = now + 3 * HEARTBEAT_INTERVAL_MS / 1000
                last_loop = now
                if self._assigned:
                    self._read(consumer, records)
                    if self._loaded and now >= self._quiet_until:
                        self.fire_due(datetime.now(UTC))
        finally:
            consumer.close()  # leaves the group: a standby takes over at once
            logger.info("Clock stopped.")

    def _on_assign(self, consumer, partitions) -> None:
        if partitions:
            with self._lock:
                self._assigned, self._loaded, self._load_end = True, False, None
                self.state = {}
            logger.info("This clock leads now; reading where the schedules stand.")

    def _on_revoke(self, consumer, partitions) -> None:
        if partitions and self._assigned:
            with self._lock:
                self._assigned = self._loaded = False
            logger.info("This clock no longer leads.")

    def _wait(self) -> float:
        """How long to wait in the consumer: until the next tick is due, at most :data:`MAX_WAIT`."""
        if not (self._assigned and self._loaded):
            return MAX_WAIT
        now = datetime.now(UTC)
        soonest = min((next_tick(s, now) for s in self.schedules), default=None)
        return MAX_WAIT if soonest is None else max(0.0, min(MAX_WAIT, (soonest - now).total_seconds()))

    def _read(self, consumer: Consumer, records: list) -> None:
        """Reads the state from the clock topic, up to its end when this clock began to lead.  Then
        this clock is its only writer, and what it reads back is older than what it knows."""
        if self._loaded:
            return
        for record in records:
            self._apply(self.state, record)
        partition = TopicPartition(self.topic, 0)
        if self._load_end is None:
            self._load_end = reading.watermarks(consumer, partition, time.monotonic() + 10)[1]
        [position] = consumer.position([partition])
        if self._load_end == 0 or position.offset >= self._load_end:
            self._loaded = True
            self._settle()
            logger.info("Clock state read (%d schedule(s) known); firing what is due.", len(self.state))

    def _settle(self) -> None:
        """Settles the ticks the last leader left ``sending``: sent, if its message is in Kafka,
        else sent now."""
        for schedule in self.schedules:
            last = self.state.get(schedule.name)
            if last is None or last.phase != "sending":
                continue
            if self._was_sent(schedule, last):
                logger.info("Tick %s of %s was sent by the last leader; recording it.", last.tick, schedule.name)
            else:
                logger.info("Tick %s of %s was not sent by the last leader; sending it.", last.tick, schedule.name)
                self.broker.enqueue(tick_message(self.broker, schedule, last.tick))
            self._record(schedule.name, last.tick, "sent", last.message_id)

    def _was_sent(self, schedule: Schedule, last: TickRecord) -> bool:
        """Looks for a tick's message in its queue, from when its ``sending`` record was written."""
        message = tick_message(self.broker, schedule, last.tick)
        topic = self.broker.settings.topic(message.queue_name)
        # A second of margin: the two records' timestamps come from one clock, but not one instant.
        records, _ = reading.read_to_end(
            self.broker, topic, since_ms=last.written_at - 1_000, reader=f"{CLOCK_GROUP}.check"
        )
        for record in records:
            try:
                if json.loads(record.value()).get("message_id") == message.message_id:
                    return True
            except (ValueError, TypeError, AttributeError):
                continue
        return False

    def fire_due(self, now: datetime) -> int:
        """Sends every tick due at ``now``, each recorded as described in the module docstring.

        Returns:
          How many ticks were sent.
        """
        sent = 0
        for schedule in self.schedules:
            last = self.state.get(schedule.name)
            last_fired = None if last is None else last.tick
            ticks = due_ticks(schedule, last_fired, now, grace=self.grace)
            if last is None:
                self._record(schedule.name, resume_point(None, now, ticks), "sent", None)
                continue
            for tick in ticks:
                message = tick_message(self.broker, schedule, tick)
                self._record(schedule.name, tick, "sending", message.message_id)
                self.broker.enqueue(message)
                self._record(schedule.name, tick, "sent", message.message_id)
                sent += 1
                logger.info("Sent tick %s of %s (message %s).", tick.isoformat(), schedule.name, message.message_id)
        return sent

    def _record(self, name: str, tick: datetime, phase: str, message_id: str | None) -> None:
        record = TickRecord(name, tick, phase, message_id, int(time.time() * 1000))
        self.broker.producer.send(Record(self.topic, record.encode(), key=name.encode(), partition=0))
        self.state[name] = record


__all__ = ["CLOCK_GROUP", "CLOCK_TOPIC", "Clock", "TickRecord", "tick_message"]
