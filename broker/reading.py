"""Reading a topic to its end, as it was when the read began: for tools, not for consumers.

The dead-letter CLI, the clock and the operations pages read topics whole (or from a time on)
without joining a consumer group: partitions are assigned, nothing is committed, and the read stops
at each partition's end offset as it was when it began, so records written meanwhile do not keep it
going.  :func:`group_offsets` reads where a consumer group stands (``join`` and the lag the
operations pages show).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from .clientlog import ClientLog

#: How long a read may take by default (s).
READ_TIMEOUT = 30


class ReadIncomplete(Exception):
    """A read did not reach the end of its topic in time.  The message says where it stopped."""


def read_to_end(
    broker,
    topic: str,
    *,
    since_ms: int | None = None,
    timeout: float = READ_TIMEOUT,
    reader: str = "kafka-tasks-reader",
) -> tuple[list, dict[int, int]]:
    """Reads every record of a topic, from its start (or from ``since_ms``) to its end as it was
    when the read began.

    Parameters:
      broker(KafkaBroker): Whose cluster and settings to use.
      topic(str): The full topic name.
      since_ms(int|None): Read only records written at or after this time (epoch ms).
      timeout(float): How long the read may take, in seconds.
      reader(str): The (unprefixed) group id the reader names itself with; it never joins it.

    Returns:
      The records, and the end offset of each partition.

    Raises:
      ReadIncomplete: If the end is not reached within ``timeout`` seconds, saying where it stopped.
      KafkaException: If the topic's partitions cannot be read.
    """
    consumer = Consumer(
        {
            **broker.settings.client_config(),
            **ClientLog(f"reader of {topic}").config(),
            "group.id": broker.settings.group(reader),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        deadline = time.monotonic() + timeout
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        ends, starts = {}, {}
        for partition in sorted(metadata.partitions):
            low, high = watermarks(consumer, TopicPartition(topic, partition), deadline)
            ends[partition], starts[partition] = high, low
        if since_ms is not None and ends:
            asked = [TopicPartition(topic, p, since_ms) for p in ends]
            for tp in consumer.offsets_for_times(asked, timeout=max(0.1, deadline - time.monotonic())):
                # -1: no record that late, so nothing to read there.
                starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else max(tp.offset, starts[tp.partition])
        assignment = [TopicPartition(topic, p, starts[p]) for p in ends if ends[p] > starts[p]]
        pending = {tp.partition: ends[tp.partition] for tp in assignment}
        records = []
        if assignment:
            consumer.assign(assignment)
        while pending:
            if time.monotonic() > deadline:
                where = ", ".join(f"partition {p} before offset {end}" for p, end in sorted(pending.items()))
                raise ReadIncomplete(f"reading {topic} did not reach its end within {timeout:.0f}s ({where})")
            for record in consumer.consume(500, timeout=0.2):
                if record.error() is not None or record.partition() not in pending:
                    continue
                if record.offset() < pending[record.partition()]:
                    records.append(record)
            # By position, not by the last record: compaction may have removed the last offsets.
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= pending[tp.partition]:
                    del pending[tp.partition]
        return records, ends
    finally:
        consumer.close()


#: The errors of a topic that was created a moment ago and has no leader yet.
_NO_LEADER_YET = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's low and high offsets, waiting (until ``deadline``) for a new topic's leader."""
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(0.1, deadline - time.monotonic()), cached=False)
        except KafkaException as e:
            if e.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass(frozen=True)
class PartitionOffsets:
    """Where a consumer group stands in one partition.

    Parameters:
      topic(str), partition(int): The partition.
      start(int), end(int): Its first offset kept, and the offset its next record will have.
      committed(int): The group's committed offset (-1: none).
    """

    topic: str
    partition: int
    start: int
    end: int
    committed: int

    @property
    def behind(self) -> int:
        """Records the group has not committed past: its lag."""
        return max(0, self.end - max(self.committed, self.start))

    @property
    def held(self) -> int:
        """Records the partition keeps."""
        return max(0, self.end - self.start)


def group_offsets(
    broker, group: str | None, topics: list[str], timeout: float = READ_TIMEOUT
) -> list[PartitionOffsets]:
    """Reads where a consumer group (its full name; ``None`` for none) stands in every partition of
    the topics that exist.

    Committed offsets are read first, then the ends: a record moving on (a delay hop, a due message
    going to its queue) is written before its old offset is committed, so it shows as uncommitted
    or within the ends, never as neither.  They are read with a consumer of the group that never
    joins it (:meth:`KafkaBroker.committed`), not the admin client, whose offset-fetch error path
    crashes librdkafka 2.16 (it refreshes a consumer group the admin client does not have).

    Raises:
      KafkaException: If the cluster cannot answer.
    """
    admin = broker.admin
    metadata = admin.list_topics(timeout=timeout).topics
    partitions = [TopicPartition(t, p) for t in topics if t in metadata for p in sorted(metadata[t].partitions)]
    if not partitions:
        return []
    committed = {} if group is None else broker.committed(group, partitions, timeout=timeout)
    ends = _offsets(admin, partitions, OffsetSpec.latest(), timeout)
    starts = _offsets(admin, partitions, OffsetSpec.earliest(), timeout)
    return [
        PartitionOffsets(tp.topic, tp.partition, starts[tp], ends[tp], committed.get((tp.topic, tp.partition), -1))
        for tp in partitions
    ]


def _offsets(admin, partitions: list[TopicPartition], spec, timeout: float) -> dict[TopicPartition, int]:
    asked = admin.list_offsets({tp: spec for tp in partitions})
    return {tp: future.result(timeout).offset for tp, future in asked.items()}
