"""Follow-ups: what a processed message leads to, owed by that message until Kafka has it.

Once an actor has run, Dramatiq's middleware sends what the message leads to: its retry
(Retries), its result (Results), the next message of a pipeline (Pipelines), success and failure
callbacks (Callbacks).  Dramatiq only logs an exception raised there, and the worker then acks
the message: had Kafka refused one of those sends, it would be lost with the message's offset
committed.  So a send that fails there is owed by the message being processed, and its ack (or
nack) makes it first (see ``KafkaConsumer.ack``).

Which message is being processed is known per worker thread from the moment its actor has
returned until the last middleware has seen it: two middleware mark that span, one kept last in
the broker's list (its ``after_`` hooks run first, as Dramatiq runs them in reverse) and one kept
first.  A send the actor itself makes is not a follow-up: it fails the actor, which is retried.
"""

from __future__ import annotations

import threading

import dramatiq

_local = threading.local()


def owner():
    """Returns the message whose follow-ups this thread is sending, or ``None``."""
    return getattr(_local, "message", None)


def owe(send, message=None) -> None:
    """Has a message owe ``send``, which Kafka just refused: ``message`` itself if it is being
    processed (a retry of it), else the message whose follow-ups this thread is sending, if any.
    """
    for debtor in (message, owner()):
        if hasattr(debtor, "owe"):
            debtor.owe(send)
            return


class FollowUpsBegin(dramatiq.Middleware):
    """Kept last in the broker's middleware: marks the start of a message's follow-ups."""

    def after_process_message(self, broker, message, *, result=None, exception=None):
        _local.message = message

    def after_skip_message(self, broker, message):
        _local.message = message


class FollowUpsEnd(dramatiq.Middleware):
    """Kept first in the broker's middleware: marks their end."""

    def after_process_message(self, broker, message, *, result=None, exception=None):
        _local.message = None

    def after_skip_message(self, broker, message):
        _local.message = None


def keep_in_place(middleware: list, begin: FollowUpsBegin, end: FollowUpsEnd) -> None:
    """Puts ``end`` first and ``begin`` last in a broker's middleware list, in place."""
    for marker in (begin, end):
        if marker in middleware:
            middleware.remove(marker)
    middleware.insert(0, end)
    middleware.append(begin)
