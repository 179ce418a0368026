"""Task ids the gateway issues: time-ordered, and signed, so that an id alone shows it was accepted.

A task's row in the database is written by the worker that runs it.  Until then, its status is
``queued``, and the gateway can say so without having written anything: the id it answered the
``202`` with is a UUIDv7 (RFC 9562: its first 48 bits are the time it was made), followed by an
HMAC of it that also covers the task's kind (its actor).  Only the gateway holds the key, so an id
that carries a valid signature and has no row is a task Kafka acknowledged that no worker has
started yet, made at the time it carries; any other id without a row is unknown (``404``).

Writing a ``queued`` row instead cost each sign-up a database write, a large share of what a
sign-up costs the gateway (``docs/benchmarks.md``).  It also left a task acknowledged by Kafka
unknown whenever that write failed.

This module does no I/O: the key is handed to it (the store keeps it).
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import time
import uuid
from collections.abc import Iterable
from typing import NamedTuple

from itsdangerous import Signer

#: How the signature is set apart from the UUID.
SEPARATOR = "."

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def from_millis(millis: int) -> dt.datetime:
    """Returns the UTC time of a Unix time in ms, exactly (as Dramatiq's message timestamps are)."""
    return EPOCH + dt.timedelta(milliseconds=millis)


def uuid7(millis: int, random: bytes | None = None) -> uuid.UUID:
    """Returns a version 7 UUID: ``millis`` (Unix time in ms) in its first 48 bits, then random bits.

    Parameters:
      millis(int): The time the UUID stands for.
      random(bytes): 10 random bytes; by default from ``os.urandom``.
    """
    random = os.urandom(10) if random is None else random
    value = (millis & (1 << 48) - 1) << 80 | int.from_bytes(random[:10], "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC's variant
    return uuid.UUID(int=value)


class Issued(NamedTuple):
    """What a signed task id tells: the kind of task, and when the gateway made it."""

    kind: str
    created_at: dt.datetime


class TaskIds:
    """Makes and recognises the gateway's task ids.

    Parameters:
      key(str): The secret they are signed with; every gateway process must use the same one.
    """

    def __init__(self, key: str) -> None:
        self._key = key
        self._signers: dict[str, Signer] = {}

    def _signer(self, kind: str) -> Signer:
        signer = self._signers.get(kind)
        if signer is None:
            signer = self._signers[kind] = Signer(self._key, salt=f"kafka-tasks task id {kind}", sep=SEPARATOR)
        return signer

    def new(self, kind: str, *, millis: int | None = None) -> str:
        """Returns a new task id for a task of ``kind``, made at ``millis`` (Unix time in ms; now by default)."""
        millis = int(time.time() * 1000) if millis is None else millis
        return self._signer(kind).sign(str(uuid7(millis))).decode()

    def issued(self, task_id: str, kinds: Iterable[str]) -> Issued | None:
        """Tells whether ``task_id`` is one of ours, for a task of one of ``kinds``.

        Returns:
          Its kind and creation time, or None if no key of ours signed it (a made-up or mistyped
          id, one signed for another kind, or an id Dramatiq made).
        """
        if not task_id.isascii():
            return None
        value, separator, _ = task_id.rpartition(SEPARATOR)
        try:
            made = uuid.UUID(value) if separator else None
        except ValueError:
            return None
        if made is None or made.version != 7 or str(made) != value:
            return None
        for kind in kinds:
            # Signed again and compared whole, not validated: base64 leaves the last character of a
            # signature a few spare bits, so other spellings of a valid signature would validate too.
            if hmac.compare_digest(self._signer(kind).sign(value).decode(), task_id):
                return Issued(kind, from_millis(made.int >> 80))
        return None
