"""Listing and replaying a queue's dead letters (``kafka-tasks dlq``).

A queue's dead letters are the records of its ``<queue>.XQ`` topic (see :mod:`broker.deadletters`).
They are read from the beginning to the end with an *assigned* consumer: no consumer group joins
and nothing is committed, so listing never disturbs anything.

**Ids.**  A dead letter's id is its offset in the dead-letter topic (``PARTITION:OFFSET`` outside
partition 0; the broker creates that topic with one partition).  An offset names exactly one dead
letter, where a message id would not: one message can be dead-lettered twice, and an undecodable
record has no message id at all.  ``dlq list`` prints these ids and ``dlq replay --id`` takes them.

**Replay** sends a dead message back to its queue, with the same message id and a fresh retry
budget, through :meth:`KafkaBroker.enqueue` (so it returns once Kafka has it).  Only records that
decode as Dramatiq messages can be replayed.  Once Kafka has acknowledged the replayed message, a
marker goes to the compacted topic ``<queue>.XQ.replayed``, keyed by the dead letter's id, with
the message id and the dead-letter topic's end at the time.  A dead letter counts as replayed when
a marker for its message was written after it was dead-lettered (its offset is below that end):
so replaying again skips it, and so does a duplicate dead letter of the same message, while a
replayed message that fails again is a new dead letter that can be replayed in its turn.

Limitations: two replays of the same dead letter running at the same moment may both send it, and
a crash between a send and its marker sends it again on the next replay: at least once, like
every other delivery, so actors must stay idempotent.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace

import dramatiq
from dramatiq.common import current_millis, q_name, xq_name

from . import reading
from .deadletters import REPLAYED_SUFFIX, DeadLetterInfo
from .producer import Record
from .topics import ensure_topics

#: How long reading a dead-letter topic to its end may take (s).
READ_TIMEOUT = 30

#: The options a replayed message loses: those of its earlier attempts, so it starts afresh.
RESET_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")

#: The option that marks a replayed message, with the time of its replay (ms): middleware that
#: skips a redelivery of a task that already failed for good lets a replay through.
REPLAYED_OPTION = "replayed_at"


class DeadLetterError(Exception):
    """Dead letters could not be read or replayed.  The message is one line, meant for a user."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic.

    Parameters:
      id(str): Its id: the offset (``PARTITION:OFFSET`` outside partition 0).
      partition(int), offset(int): Where it is in the dead-letter topic.
      timestamp(int): When it was dead-lettered, in epoch milliseconds.
      info(DeadLetterInfo|None): Why and from where; ``None`` if its headers are missing.
      value(bytes): The record as it was dead-lettered.
      message(Message|None): The value decoded, if it is a Dramatiq message.
      decode_error(str|None): Why the value is no message, if it is not.
      replayed(bool): Whether it was replayed (see the module's docstring).
    """

    id: str
    partition: int
    offset: int
    timestamp: int
    info: DeadLetterInfo | None
    value: bytes = field(repr=False)
    message: dramatiq.Message | None = field(default=None, repr=False)
    decode_error: str | None = None
    replayed: bool = False

    @classmethod
    def from_record(cls, partition: int, offset: int, value: bytes | None, headers, timestamp: int) -> DeadLetter:
        """Builds a dead letter from a record's parts (not yet checked against replay markers)."""
        try:
            info = DeadLetterInfo.from_headers(headers)
        except (KeyError, ValueError):
            info = None
        message = decode_error = None
        if info is not None and info.original_size is not None:
            decode_error = f"only the first {len(value or b'')} of its {info.original_size} bytes were kept"
        else:
            try:
                message = dramatiq.Message.decode(value or b"")
            except Exception as e:
                decode_error = f"{type(e).__name__}: {e}"
        return cls(
            id=dead_letter_id(partition, offset),
            partition=partition,
            offset=offset,
            timestamp=timestamp,
            info=info,
            value=value or b"",
            message=message,
            decode_error=decode_error,
        )

    @property
    def reason(self) -> str:
        return self.info.reason if self.info is not None else "(no dead-letter headers)"

    @property
    def actor_name(self) -> str | None:
        return None if self.message is None else self.message.actor_name

    @property
    def message_id(self) -> str | None:
        return None if self.message is None else self.message.message_id


@dataclass(frozen=True)
class ReplayMarker:
    """The record that says a dead letter was replayed.

    Parameters:
      id(str): The dead letter's id (the marker's key).
      message_id(str): The replayed message's id.
      ends(dict[int, int]): The dead-letter topic's end offset per partition at the replay: every
        dead letter of this message below them existed then, and is covered by this replay.
      replayed_at(int): Epoch milliseconds.
    """

    id: str
    message_id: str
    ends: dict[int, int]
    replayed_at: int = 0

    def encode(self) -> bytes:
        ends = {str(partition): end for partition, end in self.ends.items()}
        return json.dumps({"message_id": self.message_id, "ends": ends, "replayed_at": self.replayed_at}).encode()

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> ReplayMarker:
        """Raises: ValueError, KeyError or TypeError if the record is no marker."""
        data = json.loads(value)
        return cls(
            id=key.decode(),
            message_id=str(data["message_id"]),
            ends={int(partition): int(end) for partition, end in data["ends"].items()},
            replayed_at=int(data.get("replayed_at", 0)),
        )

    def covers(self, letter: DeadLetter) -> bool:
        """Tells whether replaying this marker's message also dealt with ``letter``."""
        return letter.message_id == self.message_id and letter.offset < self.ends.get(letter.partition, 0)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: the dead letters sent back, and those skipped with why."""

    replayed: list[DeadLetter]
    skipped: list[tuple[DeadLetter, str]]


def dead_letter_id(partition: int, offset: int) -> str:
    """Returns the id of the dead letter at ``offset`` of ``partition``."""
    return str(offset) if partition == 0 else f"{partition}:{offset}"


def parse_id(text: str) -> str:
    """Returns an id in the form :func:`dead_letter_id` gives (``0:7`` becomes ``7``).

    Raises:
      ValueError: If the text is no ``OFFSET`` or ``PARTITION:OFFSET``.
    """
    partition, _, offset = text.strip().rpartition(":")
    try:
        numbers = int(partition or 0), int(offset)
    except ValueError:
        raise ValueError(f"{text!r} is no dead-letter id (OFFSET or PARTITION:OFFSET)") from None
    if min(numbers) < 0:
        raise ValueError(f"{text!r} is no dead-letter id (OFFSET or PARTITION:OFFSET)")
    return dead_letter_id(*numbers)


def fresh_message(message: dramatiq.Message, queue_name: str) -> dramatiq.Message:
    """Returns the message to replay: the same id, actor and arguments, with the options of its
    earlier attempts dropped (so it gets a fresh retry budget), marked replayed, and a new
    timestamp (so an age limit counts from the replay)."""
    now = current_millis()
    options = {name: value for name, value in message.options.items() if name not in RESET_OPTIONS}
    return dramatiq.Message(
        queue_name=q_name(queue_name),
        actor_name=message.actor_name,
        args=message.args,
        kwargs=message.kwargs,
        options={**options, REPLAYED_OPTION: now},
        message_id=message.message_id,
        message_timestamp=now,
    )


def mark_replayed(letters: list[DeadLetter], markers: list[ReplayMarker]) -> list[DeadLetter]:
    """Returns the dead letters with ``replayed`` set from the markers."""
    return [
        letter if letter.message is None else replace(letter, replayed=any(marker.covers(letter) for marker in markers))
        for letter in letters
    ]


# Kafka ----------------------------------------------------------------------------------------


def dead_letter_topic(broker, queue_name: str) -> str:
    """Returns the full name of a queue's dead-letter topic."""
    return broker.settings.topic(xq_name(q_name(queue_name)))


def marker_topic(broker, queue_name: str) -> str:
    """Returns the full name of a queue's replay-marker topic."""
    return dead_letter_topic(broker, queue_name) + REPLAYED_SUFFIX


def list_dead_letters(broker, queue_name: str, *, timeout: float = READ_TIMEOUT) -> list[DeadLetter]:
    """Returns a queue's dead letters, oldest first, each with whether it was replayed.

    Raises:
      DeadLetterError: If the queue has no dead-letter topic, or reading it timed out.
    """
    return _read_dead_letters(broker, queue_name, timeout)[0]


def _read_dead_letters(broker, queue_name: str, timeout: float) -> tuple[list[DeadLetter], dict[int, int]]:
    topic = dead_letter_topic(broker, queue_name)
    existing = broker.admin.list_topics(timeout=timeout).topics
    if topic not in existing:
        raise DeadLetterError(
            f"there is no dead-letter topic {topic}: is {q_name(queue_name)!r} a queue here (and KAFKA_PREFIX right)?"
        )
    records, ends = read_to_end(broker, topic, timeout=timeout)
    letters = [
        DeadLetter.from_record(r.partition(), r.offset(), r.value(), r.headers(), r.timestamp()[1]) for r in records
    ]
    markers = []
    replayed = marker_topic(broker, queue_name)
    if replayed in existing:
        for record in read_to_end(broker, replayed, timeout=timeout)[0]:
            try:
                markers.append(ReplayMarker.decode(record.key() or b"", record.value() or b""))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # Not written by replay; it marks nothing.
    return mark_replayed(letters, markers), ends


def read_to_end(broker, topic: str, *, timeout: float = READ_TIMEOUT) -> tuple[list, dict[int, int]]:
    """:func:`broker.reading.read_to_end` of a dead-letter topic.

    Raises:
      DeadLetterError: If the end is not reached within ``timeout`` seconds, saying where it stopped.
    """
    try:
        return reading.read_to_end(broker, topic, timeout=timeout, reader="kafka-tasks-dlq")
    except reading.ReadIncomplete as e:
        raise DeadLetterError(str(e)) from None


def replay(broker, queue_name: str, ids=None, *, timeout: float = READ_TIMEOUT) -> ReplayResult:
    """Sends dead messages back to their queue, each once (see the module's docstring).

    Parameters:
      broker(KafkaBroker): The broker whose queue it is.
      queue_name(str): The queue.
      ids(list[str]|None): The dead letters to replay; every one by default.

    Raises:
      DeadLetterError: If an id names no dead letter (then nothing is replayed).
      MissingTopics: If the replay-marker topic is missing and may not be created.
      DeliveryFailed: If Kafka did not acknowledge a replayed message or its marker.
    """
    queue_name = q_name(queue_name)
    letters, ends = _read_dead_letters(broker, queue_name, timeout)
    if ids is None:
        selected = letters
    else:
        by_id = {letter.id: letter for letter in letters}
        try:
            wanted = list(dict.fromkeys(parse_id(text) for text in ids))
        except ValueError as e:
            raise DeadLetterError(str(e)) from None
        unknown = [text for text in wanted if text not in by_id]
        if unknown:
            raise DeadLetterError(
                f"no dead letter with id {', '.join(unknown)} in {dead_letter_topic(broker, queue_name)}"
            )
        selected = [by_id[text] for text in wanted]
    replayed, skipped, sent = [], [], {}
    for letter in selected:
        if letter.replayed:
            skipped.append((letter, "already replayed"))
        elif letter.message is None:
            skipped.append((letter, f"not a Dramatiq message ({letter.decode_error}), so it cannot be replayed"))
        elif letter.message_id in sent:
            skipped.append((letter, f"the same message as dead letter {sent[letter.message_id]}"))
        else:
            sent[letter.message_id] = letter.id
            replayed.append(letter)
    if replayed:
        topic = marker_topic(broker, queue_name)
        ensure_topics(
            broker.admin, [spec for spec in broker.topic_specs(queue_name) if spec.name == topic], timeout=timeout
        )
        broker.declare_queue(queue_name)
        for letter in replayed:
            # One at a time: a marker is written only once its message is stored.
            broker.enqueue(fresh_message(letter.message, queue_name))
            marker = ReplayMarker(letter.id, letter.message_id, ends, current_millis())
            broker.producer.send(Record(topic, marker.encode(), key=letter.id.encode()))
    return ReplayResult(replayed=replayed, skipped=skipped)


# Presentation ---------------------------------------------------------------------------------

#: The widest reason a table shows; ``dlq list`` is for scanning, the headers hold it all.
MAX_REASON_WIDTH = 100


def render_table(letters: list[DeadLetter]) -> str:
    """Returns dead letters as a plain-text table, one line each."""
    header = ("ID", "DEAD-LETTERED (UTC)", "ACTOR", "MESSAGE ID", "RETRIES", "REPLAYED", "REASON")
    rows = [header]
    for letter in letters:
        reason = " ".join(letter.reason.split())
        if len(reason) > MAX_REASON_WIDTH:
            reason = reason[: MAX_REASON_WIDTH - 3] + "..."
        when = dt.datetime.fromtimestamp(letter.timestamp / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append(
            (
                letter.id,
                when,
                letter.actor_name or "-",
                letter.message_id or "-",
                str(letter.info.retries if letter.info else "-"),
                "yes" if letter.replayed else "no",
                reason,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in rows
    )
