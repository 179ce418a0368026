"""What a dead letter carries: the reason it failed and where it came from, as record headers.

A message that Dramatiq rejects (``nack``), a record that cannot be decoded and a message for an
unknown actor all go to the queue's dead-letter topic (``<queue>.XQ``) with these headers, so an
operator can see why without reading worker logs, and replay it once the cause is fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: Header names, all under one prefix.
REASON = "x-dead-letter-reason"
EXCEPTION_TYPE = "x-dead-letter-exception-type"
EXCEPTION_MESSAGE = "x-dead-letter-exception-message"
RETRIES = "x-dead-letter-retries"
ORIGINAL_TOPIC = "x-dead-letter-original-topic"
ORIGINAL_PARTITION = "x-dead-letter-original-partition"
ORIGINAL_OFFSET = "x-dead-letter-original-offset"
DEAD_LETTERED_AT = "x-dead-letter-at"
ORIGINAL_SIZE = "x-dead-letter-original-size"

#: The suffix of a queue's replay-marker topic, after its dead-letter topic's name (see broker.dlq).
REPLAYED_SUFFIX = ".replayed"

#: Exception messages are cut to this length so one dead letter cannot grow past Kafka's limits.
MAX_TEXT = 4_000

#: And to this many bytes of UTF-8, so that the headers of a dead letter stay within a bound that
#: the broker leaves room for (``broker.broker.RECORD_OVERHEAD_BYTES``).
MAX_TEXT_BYTES = 4_000


class DeadLettered(Exception):
    """A record the consumer dead-lettered itself (undecodable, malformed, oversized, unrunnable):
    what :meth:`KafkaBroker.join` raises for it.  Its text is where the record was, and why."""


def cut(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """Returns ``text`` cut to at most ``limit`` bytes of UTF-8, on a character boundary."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


#: How much of an oversized record a dead letter keeps: enough to see what it was, and small enough
#: to fit any topic's ``max.message.bytes``.  Its ``original_size`` says how big it was.
OVERSIZED_KEPT_BYTES = 16_384


@dataclass(frozen=True)
class DeadLetterInfo:
    """Why and from where a record was dead-lettered.

    Parameters:
      reason(str): A one-line explanation.
      topic(str), partition(int), offset(int): The record's original position.
      exception_type(str|None), exception_message(str|None): The actor's error, if any.
      retries(int): How many times the message was retried before.
      dead_lettered_at(int): Epoch milliseconds.
      original_size(int|None): Set when the dead letter keeps only the first
        ``OVERSIZED_KEPT_BYTES`` of the record: its size in bytes.
    """

    reason: str
    topic: str
    partition: int
    offset: int
    exception_type: str | None = None
    exception_message: str | None = None
    retries: int = 0
    dead_lettered_at: int = 0
    original_size: int | None = None

    @classmethod
    def for_exception(
        cls, exception: BaseException | None, *, retries: int, topic: str, partition: int, offset: int
    ) -> DeadLetterInfo:
        """Builds the info for a message whose actor failed with ``exception``."""
        if exception is None:
            reason = "rejected"
            exception_type = exception_message = None
        else:
            exception_type = type(exception).__name__
            exception_message = cut(str(exception)[:MAX_TEXT])
            reason = cut(f"{exception_type}: {exception_message}"[:MAX_TEXT])
        return cls(
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            exception_type=exception_type,
            exception_message=exception_message,
            retries=retries,
            dead_lettered_at=int(time.time() * 1000),
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Returns the info as Kafka record headers."""
        values = {
            REASON: cut(self.reason[:MAX_TEXT]),
            ORIGINAL_TOPIC: self.topic,
            ORIGINAL_PARTITION: str(self.partition),
            ORIGINAL_OFFSET: str(self.offset),
            RETRIES: str(self.retries),
            DEAD_LETTERED_AT: str(self.dead_lettered_at or int(time.time() * 1000)),
            EXCEPTION_TYPE: None if self.exception_type is None else cut(self.exception_type, 256),
            EXCEPTION_MESSAGE: None if self.exception_message is None else cut(self.exception_message[:MAX_TEXT]),
            ORIGINAL_SIZE: None if self.original_size is None else str(self.original_size),
        }
        return [(name, value.encode("utf-8", errors="replace")) for name, value in values.items() if value is not None]

    @classmethod
    def from_headers(cls, headers) -> DeadLetterInfo:
        """Reads the info back from a dead letter's headers.

        Raises:
          KeyError: If the headers lack the reason or the original position.
        """
        values = {name: value.decode(errors="replace") for name, value in headers or [] if value is not None}
        return cls(
            reason=values[REASON],
            topic=values[ORIGINAL_TOPIC],
            partition=int(values[ORIGINAL_PARTITION]),
            offset=int(values[ORIGINAL_OFFSET]),
            exception_type=values.get(EXCEPTION_TYPE),
            exception_message=values.get(EXCEPTION_MESSAGE),
            retries=int(values.get(RETRIES, 0)),
            dead_lettered_at=int(values.get(DEAD_LETTERED_AT, 0)),
            original_size=int(values[ORIGINAL_SIZE]) if ORIGINAL_SIZE in values else None,
        )
