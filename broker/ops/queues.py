"""Where each queue stands, read from Kafka: messages waiting (lag per partition, from committed and
end offsets), delayed messages pending per tier, and dead letters.  What a newcomer had to write a
script for."""

from __future__ import annotations

from dataclasses import dataclass, field

from dramatiq.common import dq_name, xq_name

from ..reading import PartitionOffsets, group_offsets


@dataclass(frozen=True)
class QueueState:
    """One queue, now.

    Parameters:
      name(str): The queue.
      partitions(list[PartitionOffsets]): Its topic's partitions, where its consumer group stands.
      delayed(dict[str, int]): Per delay tier (``1s``, ``10m``...), the messages not yet due or moved.
      dead_letters(int): The records its dead-letter topic keeps.
      paused(bool): Whether an operator paused it.
    """

    name: str
    partitions: list[PartitionOffsets] = field(default_factory=list)
    delayed: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    paused: bool = False

    @property
    def waiting(self) -> int:
        """Messages on the queue not yet processed (its consumer group's lag)."""
        return sum(p.behind for p in self.partitions)

    @property
    def delayed_total(self) -> int:
        return sum(self.delayed.values())

    def as_dict(self) -> dict:
        """The state as JSON data (``kafka-tasks status --json``)."""
        return {
            "queue": self.name,
            "waiting": self.waiting,
            "partitions": [
                {"partition": p.partition, "end": p.end, "committed": p.committed, "lag": p.behind}
                for p in self.partitions
            ],
            "delayed": self.delayed_total,
            "delayed_by_tier": self.delayed,
            "dead_letters": self.dead_letters,
            "paused": self.paused,
        }


def queue_state(broker, queue_name: str, *, paused: bool = False) -> QueueState:
    """Reads a queue's state from its topics and consumer groups.

    Raises:
      KafkaException: If the cluster cannot answer.
    """
    topic, group = broker.settings.topic, broker.settings.group
    main = group_offsets(broker, group(queue_name), [topic(queue_name)])
    tiers = broker.tiers.topics(dq_name(queue_name))
    by_topic = {topic(name): name.rsplit(".", 1)[-1] for name in tiers}
    delayed: dict[str, int] = {}
    for offsets in group_offsets(broker, group(dq_name(queue_name)), list(by_topic)):
        tier = by_topic[offsets.topic]
        delayed[tier] = delayed.get(tier, 0) + offsets.behind
    dead = sum(p.held for p in group_offsets(broker, None, [topic(xq_name(queue_name))]))
    return QueueState(queue_name, main, delayed, dead, paused)
