"""Pausing and resuming a queue: a command through Kafka that every worker of the queue obeys.

The control topic (``kafka-tasks.control``, compacted, one partition) keeps one record per queue,
its last command: paused or not, when, and by whom.  Every worker process reads it from its start
and then follows it (see :class:`broker.ops.reporter.OpsReporter`), so a pause reaches the workers
within a second or two, and a worker that starts while a queue is paused starts paused.  A paused
queue's consumers stop fetching and hand nothing out; what they handed out finishes and is
committed; nothing is lost.  Its delayed messages still come due and move to the queue, where they
wait.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .. import reading
from ..producer import Record
from ..topics import TopicSpec, ensure_topics

#: The control topic (``KAFKA_PREFIX`` in front).
CONTROL_TOPIC = "kafka-tasks.control"


@dataclass(frozen=True)
class QueueCommand:
    """The last command given to a queue.

    Parameters:
      queue(str): The queue.
      paused(bool): Whether it is paused.
      at_ms(int): When the command was given (epoch ms).
      by(str): Who gave it (for the dashboard: "ops page", "kafka-tasks", a user name).
    """

    queue: str
    paused: bool
    at_ms: int
    by: str

    def encode(self) -> bytes:
        return json.dumps({"paused": self.paused, "at_ms": self.at_ms, "by": self.by}).encode()

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> QueueCommand:
        """Raises ``ValueError``, ``KeyError`` or ``TypeError`` for a record that is no command."""
        fields = json.loads(value)
        if not isinstance(fields["paused"], bool):
            raise ValueError(f"not a queue command: {value[:200]!r}")
        return cls(key.decode(), fields["paused"], int(fields["at_ms"]), str(fields.get("by", "")))


def fold(commands: dict[str, QueueCommand], records: Iterable) -> dict[str, QueueCommand]:
    """Adds control records, in order, to the last command of each queue; other records are ignored."""
    for record in records:
        if record.error() is not None or record.key() is None or record.value() is None:
            continue
        try:
            command = QueueCommand.decode(record.key(), record.value())
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        commands[command.queue] = command
    return commands


def paused(commands: dict[str, QueueCommand]) -> frozenset[str]:
    """The queues whose last command paused them."""
    return frozenset(name for name, command in commands.items() if command.paused)


class Control:
    """Gives and reads queue commands, through a broker's cluster.

    Parameters:
      broker(KafkaBroker): Its cluster, prefix and producer.
    """

    def __init__(self, broker) -> None:
        self.broker = broker
        self.topic = broker.settings.topic(CONTROL_TOPIC)

    def topic_spec(self) -> TopicSpec:
        return TopicSpec(self.topic, 1, self.broker.replication_factor, {"cleanup.policy": "compact"})

    def ensure_topic(self) -> list[str]:
        """Creates the control topic if it is missing.

        Raises:
          MissingTopics: If it is missing and the cluster does not let this client create it.
        """
        return ensure_topics(self.broker.admin, [self.topic_spec()])

    def command(self, queue: str, *, paused: bool, by: str) -> QueueCommand:
        """Pauses or resumes a queue, for every worker; returns once Kafka has the command.

        Raises:
          DeliveryFailed: If Kafka did not take it.
        """
        self.ensure_topic()
        command = QueueCommand(queue, paused, int(time.time() * 1000), by)
        self.broker.producer.send(Record(self.topic, command.encode(), key=queue.encode(), partition=0))
        return command

    def read(self) -> dict[str, QueueCommand]:
        """The last command of each queue that was given one."""
        try:
            records, _ = reading.read_to_end(self.broker, self.topic, reader="kafka-tasks.control.reader")
        except KeyError:  # no such topic yet: no command was ever given
            return {}
        return fold({}, records)
