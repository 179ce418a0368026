"""Durable delays on Kafka: fixed-delay tier topics, decided by pure logic.

Dramatiq delays a message (an ``eta``, used by the Retries middleware for backoff) by putting it
on the queue's delay queue, ``<queue>.DQ``, and its own worker holds such messages in memory, unacked,
until they are due.  On a log that pins the committed offset behind the furthest eta and loses or
repeats delayed messages on a crash.  kafka-tasks keeps them in Kafka instead, the way Spring Kafka's
non-blocking retries do:

* ``<queue>.DQ`` is a set of *tier* topics, ``<queue>.DQ.<tier>``, each with one fixed delay.  A
  message is written to the largest tier whose delay is not longer than the time it still has to
  wait.
* In one partition of a tier, records are appended in time order and all wait the same fixed
  time, so they come due in order.  The consumer pauses a partition whose head is not due yet and
  resumes it when it is: nothing waits in memory and polling never stops.
* When a record has waited its tier's delay but its eta is still ahead, it *hops*: it is written
  again to the tier that fits the time left, and then committed.  The last tier, ``0``, holds a
  record until its exact eta; only records due within the next tier's delay ever get there, so a
  record behind it waits at most that long.

So a record is late by at most the smallest non-zero tier (100 ms by default) plus the time of one
hop, memory stays flat however many messages are pending, and a crash at any point redelivers.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass

#: The fixed delays of the default tiers, in milliseconds.  Neighbours are at most 10x apart, so a
#: delay takes a bounded number of hops; the largest is one day.
DEFAULT_TIER_DELAYS = (0, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000)

#: The longest delay Dramatiq's Retries middleware asks for by default (7 days).
MAX_DELAY_MS = 7 * 86_400_000

#: Delay topics keep records for twice the longest delay, so a record survives a week-long outage.
DELAY_RETENTION_MS = 2 * MAX_DELAY_MS


def tier_suffix(delay_ms: int) -> str:
    """Returns a short, readable topic suffix for a tier delay: ``0``, ``100ms``, ``10s``, ``1h``."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if delay_ms and delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms" if delay_ms else "0"


@dataclass(frozen=True, order=True)
class DelayTier:
    """One fixed-delay tier.

    Parameters:
      delay_ms(int): How long every record waits in this tier (0: until its eta).
    """

    delay_ms: int

    @property
    def suffix(self) -> str:
        return tier_suffix(self.delay_ms)

    def topic(self, delay_queue_name: str) -> str:
        """Returns this tier's topic name for a Dramatiq delay queue (``<queue>.DQ``)."""
        return f"{delay_queue_name}.{self.suffix}"


class Action(enum.Enum):
    """What to do with the head record of a tier partition."""

    #: The eta has passed: hand the message to Dramatiq, which moves it to its queue.
    DELIVER = "deliver"
    #: The tier's delay is over but the eta is not: write the record to a shorter tier.
    HOP = "hop"
    #: Neither is due: pause the partition until ``wake_at``.
    WAIT = "wait"


@dataclass(frozen=True)
class Decision:
    action: Action
    #: For WAIT, when to look at the record again (epoch milliseconds).
    wake_at: int | None = None
    #: For HOP, the tier to write the record to.
    tier: DelayTier | None = None


class DelayTiers:
    """The tiers of one broker.

    Parameters:
      delays_ms: The tiers' fixed delays in milliseconds.  They must include 0.

    Raises:
      ValueError: If the delays don't include 0, or contain a negative or duplicate value.
    """

    def __init__(self, delays_ms=DEFAULT_TIER_DELAYS) -> None:
        delays = sorted(delays_ms)
        if not delays or delays[0] != 0:
            raise ValueError("delay tiers must include a 0 ms tier")
        if len(set(delays)) != len(delays):
            raise ValueError("delay tiers must be distinct")
        self.tiers = tuple(DelayTier(delay) for delay in delays)
        self._delays = delays

    def for_delay(self, remaining_ms: int) -> DelayTier:
        """Returns the largest tier whose delay is not longer than ``remaining_ms``."""
        return self.tiers[max(bisect.bisect_right(self._delays, remaining_ms) - 1, 0)]

    def topics(self, delay_queue_name: str) -> list[str]:
        """Returns every tier topic of a Dramatiq delay queue, shortest delay first."""
        return [tier.topic(delay_queue_name) for tier in self.tiers]

    def decide(self, tier: DelayTier, *, written_at: int, eta: int, now: int) -> Decision:
        """Decides what happens to the head record of a tier partition.

        Parameters:
          tier: The tier the record is in.
          written_at: The record's timestamp (epoch ms), when it entered this tier.
          eta: When the message is due (epoch ms).
          now: The current time (epoch ms).
        """
        if eta <= now:
            return Decision(Action.DELIVER)
        released_at = written_at + tier.delay_ms
        if tier.delay_ms == 0 or released_at > now:
            return Decision(Action.WAIT, wake_at=min(eta, released_at) if tier.delay_ms else eta)
        return Decision(Action.HOP, tier=self.for_delay(eta - now))
