"""Which offsets are safe to commit when messages finish out of order.

Dramatiq's worker threads ack and nack messages concurrently and in any order, but a Kafka
consumer group stores one position per partition: everything before it counts as done.  Committing
the highest finished offset would lose every unfinished message below it on a crash, which is the
mistake kombu's and dramatiq-kafka's consumers make.  So only the *contiguous finished prefix* of
each partition is committed, and a message that finishes early waits for its elders.

Each assignment of a partition gets a new *epoch*.  A message carries the epoch it was handed out
in, and finishing it after its partition was revoked (or reassigned) does nothing: the new owner
of the partition will deliver it again.

Nothing here does I/O; :mod:`broker.consumer` drives it from the consumer thread and the worker
threads, so every public method takes a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from itertools import count

#: A partition key, in practice ``(topic, partition)``.
Partition = Hashable


class ContiguousOffsets:
    """The offsets handed out from one partition, and how far they are done without a gap.

    Offsets must be added in increasing order, as a partition delivers them.  Kafka offsets may
    have gaps (compaction, transaction markers); a gap between two handed-out offsets is not an
    unfinished message.
    """

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._unfinished: set[int] = set()
        self._next: int | None = None

    def add(self, offset: int) -> None:
        """Records that ``offset`` was handed out.

        Raises:
          ValueError: If ``offset`` is not greater than every offset added before.
        """
        if (self._pending and offset <= self._pending[-1]) or (self._next is not None and offset < self._next):
            raise ValueError(f"offset {offset} added out of order")
        self._pending.append(offset)
        self._unfinished.add(offset)

    def finish(self, offset: int) -> None:
        """Records that the message at ``offset`` is done (acked or dead-lettered).

        Raises:
          KeyError: If ``offset`` was never added or is already finished.
        """
        self._unfinished.remove(offset)
        while self._pending and self._pending[0] not in self._unfinished:
            self._next = self._pending.popleft() + 1

    @property
    def committable(self) -> int | None:
        """The position to commit: one past the last offset of the finished prefix, or ``None``."""
        return self._next

    @property
    def in_flight(self) -> int:
        """How many added offsets are not finished yet."""
        return len(self._unfinished)


class OffsetTracker:
    """Contiguous offsets for every partition a consumer owns, with epochs against stale acks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epochs = count(1)
        self._partitions: dict[Partition, tuple[int, ContiguousOffsets]] = {}
        self._committed: dict[Partition, int] = {}

    def assign(self, partition: Partition) -> int:
        """Starts tracking a newly assigned partition and returns its epoch."""
        with self._lock:
            epoch = next(self._epochs)
            self._partitions[partition] = (epoch, ContiguousOffsets())
            self._committed.pop(partition, None)
            return epoch

    def revoke(self, partition: Partition) -> None:
        """Forgets a partition: later finishes for its messages are ignored."""
        with self._lock:
            self._partitions.pop(partition, None)
            self._committed.pop(partition, None)

    def add(self, partition: Partition, offset: int) -> int | None:
        """Records a handed-out message and returns its epoch, or ``None`` if not assigned."""
        with self._lock:
            entry = self._partitions.get(partition)
            if entry is None:
                return None
            entry[1].add(offset)
            return entry[0]

    def finish(self, partition: Partition, offset: int, epoch: int) -> bool:
        """Records a finished message.

        Returns:
          bool: False when the message is stale (its partition was revoked or reassigned since it
          was handed out, or it was already finished); nothing is recorded then.
        """
        with self._lock:
            entry = self._partitions.get(partition)
            if entry is None or entry[0] != epoch:
                return False
            try:
                entry[1].finish(offset)
            except KeyError:
                return False
            return True

    def positions(self, partitions=None) -> dict[Partition, int]:
        """Returns the committable position of every owned partition that has one.

        Parameters:
          partitions: Limit the answer to these partitions (all owned ones by default).
        """
        with self._lock:
            return self._positions(partitions)

    def to_commit(self) -> dict[Partition, int]:
        """Returns the positions that moved since they were last marked committed."""
        with self._lock:
            return {
                partition: position
                for partition, position in self._positions(None).items()
                if position != self._committed.get(partition)
            }

    def _positions(self, partitions) -> dict[Partition, int]:
        keys = self._partitions if partitions is None else [p for p in partitions if p in self._partitions]
        positions = {}
        for partition in keys:
            position = self._partitions[partition][1].committable
            if position is not None:
                positions[partition] = position
        return positions

    def mark_committed(self, positions: dict[Partition, int]) -> None:
        """Records positions as committed so :meth:`to_commit` stops returning them."""
        with self._lock:
            for partition, position in positions.items():
                if partition in self._partitions:
                    self._committed[partition] = max(position, self._committed.get(partition, position))

    def commit_failed(self, positions: dict[Partition, int]) -> None:
        """Forgets positions marked committed whose commit then failed, so :meth:`to_commit` returns
        them again (a position that moved on since is returned anyway).
        """
        with self._lock:
            for partition, position in positions.items():
                if self._committed.get(partition) == position:
                    del self._committed[partition]

    @property
    def in_flight(self) -> int:
        """How many handed-out messages are unfinished, over every owned partition."""
        with self._lock:
            return sum(offsets.in_flight for _, offsets in self._partitions.values())
